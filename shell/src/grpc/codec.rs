//! The `knhk.v1` codec: prost's, except that a message that does not decode (invalid UTF-8
//! in a string, a truncated or malformed field) is the client's error: INVALID_ARGUMENT naming
//! what prost found, where prost's codec answers INTERNAL (which tells a client the server is
//! broken and invites retries of a request that can never succeed). Generated into the service
//! through `codec_path` (shell/build.rs).

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with [`ArgumentDecoder`].
#[derive(Debug, Clone, Default)]
pub struct KnhkCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for KnhkCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ArgumentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ArgumentDecoder(self.0.decoder())
    }
}

/// Prost's decoder, with decode failures as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct ArgumentDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ArgumentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|s| Status::invalid_argument(format!("malformed message: {}", s.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
