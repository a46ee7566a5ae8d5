//! Blocks: eight cases side by side (struct of arrays), for beats that load and store a field
//! of all eight cases at once (`knhk_block_fire`).
use crate::{Case, Error, Event, Net, BEAT_LANES};
use knhk_sys as sys;

/// The task value of a block lane with no event this beat ([`Net::block_fire`]).
pub const NO_TASK: u8 = sys::KNHK_NO_TASK as u8;

/// Eight cases of one net, lane `i` of every field being case `i` (the C `knhk_block_t`,
/// 896 bytes). Lanes are independent cases; copy one in or out with [`Block::set`] and
/// [`Block::get`].
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Block {
    raw: sys::knhk_block_t,
}

impl Block {
    /// Eight fresh cases of `net` (a token on the input condition, registers zero).
    pub fn new(net: &Net) -> Result<Block, Error> {
        let mut raw = sys::knhk_block_t::default();
        // SAFETY: both pointers come from live references; libknhk writes only *raw.
        Error::check(unsafe { sys::knhk_block_init(net.as_raw(), &mut raw) })?;
        Ok(Block { raw })
    }

    /// A copy of lane `lane`, or None when `lane >= 8`.
    pub fn get(&self, lane: usize) -> Option<Case> {
        if lane >= BEAT_LANES {
            return None;
        }
        let mut raw = sys::knhk_case_t::default();
        // SAFETY: lane < 8 (checked above); both pointers come from live references.
        unsafe { sys::knhk_block_get(&self.raw, lane as u32, &mut raw) };
        Some(Case { raw })
    }

    /// Copies `case` into lane `lane`. Returns false (nothing written) when `lane >= 8`.
    pub fn set(&mut self, lane: usize, case: &Case) -> bool {
        if lane >= BEAT_LANES {
            return false;
        }
        // SAFETY: lane < 8 (checked above); both pointers come from live references.
        unsafe { sys::knhk_block_set(&mut self.raw, lane as u32, &case.raw) };
        true
    }

    /// The raw C struct (read-only).
    pub fn as_raw(&self) -> &sys::knhk_block_t {
        &self.raw
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        (0..BEAT_LANES).all(|i| self.get(i) == other.get(i))
    }
}

impl Eq for Block {}

impl core::fmt::Debug for Block {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries((0..BEAT_LANES).filter_map(|i| self.get(i)))
            .finish()
    }
}

/// Which code path a block fire (or an array beat, [`Net::beat_on`]) takes. Every path gives
/// the same statuses and bytes; they differ in speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPath {
    /// The widest path the CPU has, chosen at run time (AVX-512, else AVX2, else scalar):
    /// `knhk_block_fire`, `knhk_beat_simd`.
    Best,
    /// The portable scalar path: `knhk_block_fire_scalar`, `knhk_beat_scalar`.
    Scalar,
    /// The AVX2 path (x86-64): `knhk_block_fire_on`/`knhk_beat_on` with `KNHK_BEAT_PATH_AVX2`.
    /// Refused with [`Error::BadArgument`] where the CPU lacks AVX2 ([`BlockPath::supported`]).
    Avx2,
    /// The AVX-512 F/CD/VL path (x86-64), likewise refused where the CPU lacks it.
    Avx512,
}

impl BlockPath {
    /// Every path, `Best` first.
    pub const ALL: [BlockPath; 4] = [
        BlockPath::Best,
        BlockPath::Scalar,
        BlockPath::Avx2,
        BlockPath::Avx512,
    ];

    /// The named paths (not `Best`) this CPU can run, scalar first.
    pub fn available() -> impl Iterator<Item = BlockPath> {
        [BlockPath::Scalar, BlockPath::Avx2, BlockPath::Avx512]
            .into_iter()
            .filter(|p| p.supported())
    }

    /// The path `Best` takes on this CPU (`knhk_beat_path`): `Avx512`, `Avx2` or `Scalar`.
    pub fn best() -> BlockPath {
        // SAFETY: a pure query with no arguments.
        match unsafe { sys::knhk_beat_path() } {
            sys::KNHK_BEAT_PATH_AVX512 => BlockPath::Avx512,
            sys::KNHK_BEAT_PATH_AVX2 => BlockPath::Avx2,
            _ => BlockPath::Scalar,
        }
    }

    /// Whether this CPU can run the path (`knhk_path_supported`; `Best` and `Scalar` always).
    pub fn supported(self) -> bool {
        match self.raw() {
            None => true,
            // SAFETY: a pure query on a plain integer.
            Some(p) => (unsafe { sys::knhk_path_supported(p) }) == 1,
        }
    }

    /// The path's name: `best`, `scalar`, `avx2`, `avx512` (what [`str::parse`] reads, e.g.
    /// from a `KNHK_PATH` environment variable in benches and tests).
    pub fn name(self) -> &'static str {
        match self {
            BlockPath::Best => "best",
            BlockPath::Scalar => "scalar",
            BlockPath::Avx2 => "avx2",
            BlockPath::Avx512 => "avx512",
        }
    }

    /// The C `knhk_beat_path_kind` value, or None for `Best`.
    fn raw(self) -> Option<u32> {
        match self {
            BlockPath::Best => None,
            BlockPath::Scalar => Some(sys::KNHK_BEAT_PATH_SCALAR),
            BlockPath::Avx2 => Some(sys::KNHK_BEAT_PATH_AVX2),
            BlockPath::Avx512 => Some(sys::KNHK_BEAT_PATH_AVX512),
        }
    }
}

impl core::str::FromStr for BlockPath {
    type Err = Error;

    /// `best`, `scalar`, `avx2` or `avx512` (ASCII case ignored); else [`Error::BadArgument`].
    fn from_str(s: &str) -> Result<BlockPath, Error> {
        BlockPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or(Error::BadArgument)
    }
}

impl Net {
    /// Fires `tasks[8*k + i]` on lane `i` of `blocks[k]` (or nothing for [`NO_TASK`]) and
    /// writes each lane's raw status to `statuses[8*k + i]` (0 = OK, see
    /// [`Error::from_raw`]; [`Error::LaneIdle`] for `NO_TASK`). Each lane gets exactly what
    /// [`Net::fire`] would do to that case. Errors (nothing ran) when the slices' lengths are
    /// not 8 per block, or the net is not sealed.
    #[inline]
    pub fn block_fire(
        &self,
        blocks: &mut [Block],
        tasks: &[u8],
        statuses: &mut [u8],
        path: BlockPath,
    ) -> Result<(), Error> {
        let lanes = blocks.len() * BEAT_LANES;
        if tasks.len() != lanes || statuses.len() != lanes {
            return Err(Error::BadArgument);
        }
        let nblocks = u32::try_from(blocks.len()).map_err(|_| Error::BadArgument)?;
        let (net, b, t, st) = (
            self.as_raw(),
            blocks.as_mut_ptr().cast(),
            tasks.as_ptr(),
            statuses.as_mut_ptr(),
        );
        // SAFETY: Block is repr(transparent) over knhk_block_t, so `b` is a valid array of
        // nblocks C blocks; tasks and statuses hold exactly 8 * nblocks bytes (checked); a path
        // the CPU lacks is refused by knhk_block_fire_on before anything runs.
        Error::check(unsafe {
            match path {
                BlockPath::Best => sys::knhk_block_fire(net, b, nblocks, t, st),
                BlockPath::Scalar => sys::knhk_block_fire_scalar(net, b, nblocks, t, st),
                BlockPath::Avx2 | BlockPath::Avx512 => {
                    let p = path.raw().unwrap_or(sys::KNHK_BEAT_PATH_SCALAR);
                    sys::knhk_block_fire_on(net, b, nblocks, t, st, p)
                }
            }
        })
    }

    /// [`Net::beat`] on a named path: a full beat of 8 events on distinct cases runs its hot
    /// fires as vectors on `Avx2`/`Avx512` (`Best`: the widest the CPU has); shorter beats and
    /// every other lane take the scalar rules. Same statuses and bytes as [`Net::beat`].
    /// Errors as [`Net::beat`], and [`Error::BadArgument`] for a path the CPU lacks.
    pub fn beat_on(
        &self,
        cases: &mut [Case],
        events: &[Event],
        statuses: &mut [u8; BEAT_LANES],
        path: BlockPath,
    ) -> Result<(), Error> {
        let ncases = u32::try_from(cases.len()).map_err(|_| Error::BadArgument)?;
        if events.len() > BEAT_LANES {
            return Err(Error::BadArgument);
        }
        let (net, c, e, n, st) = (
            self.as_raw(),
            cases.as_mut_ptr().cast(),
            events.as_ptr().cast(),
            events.len() as u32,
            statuses.as_mut_ptr(),
        );
        // SAFETY: Case and Event are repr(transparent) over the C structs, so the slices are
        // valid arrays of them; libknhk bounds-checks every case_index against ncases and
        // writes n <= 8 statuses into an 8-byte array; a path the CPU lacks is refused by
        // knhk_beat_on before anything runs.
        Error::check(unsafe {
            match path {
                BlockPath::Best => sys::knhk_beat_simd(net, c, ncases, e, n, st),
                BlockPath::Scalar => sys::knhk_beat_scalar(net, c, ncases, e, n, st),
                BlockPath::Avx2 | BlockPath::Avx512 => {
                    let p = path.raw().unwrap_or(sys::KNHK_BEAT_PATH_SCALAR);
                    sys::knhk_beat_on(net, c, ncases, e, n, st, p)
                }
            }
        })
    }

    /// Executes `events[i]` on lane `i` of `block` for every bit `i` set in `lanes` (any
    /// operation; the events' case_index is not read); `statuses[i]` receives lane i's raw
    /// status ([`Error::LaneIdle`] for a clear bit). Errors only for an unsealed net.
    pub fn block_beat(
        &self,
        block: &mut Block,
        events: &[Event; BEAT_LANES],
        lanes: u8,
        statuses: &mut [u8; BEAT_LANES],
    ) -> Result<(), Error> {
        // SAFETY: Event is repr(transparent) over knhk_event_t, so `events` is an array of 8
        // C events; statuses has 8 bytes; all pointers come from live references.
        Error::check(unsafe {
            sys::knhk_block_beat(
                self.as_raw(),
                &mut block.raw,
                events.as_ptr().cast(),
                u32::from(lanes),
                statuses.as_mut_ptr(),
            )
        })
    }
}
