//! Names from the network are checked and echoed bounded (issue 12, item 6): a workflow id
//! with control characters or of megabytes is INVALID_ARGUMENT, and errors about unknown
//! names repeat at most a short, escaped prefix (a newline cannot forge a log line, and the
//! client gets its status instead of a transport error).

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::grpc::*;

const BOUND: usize = 512;

fn bounded(s: &tonic::Status, code: Code) {
    assert_eq!(
        s.code(),
        code,
        "{}",
        &s.message()[..s.message().len().min(200)]
    );
    assert!(
        s.message().len() < BOUND,
        "message of {} bytes echoes the input",
        s.message().len()
    );
    assert!(
        !s.message().contains('\n'),
        "raw newline in {:?}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_validated_and_echoed_bounded() {
    let srv = start(config(1, 64, 64)).await;
    let mut c = srv
        .client()
        .await
        .max_encoding_message_size(16 << 20)
        .max_decoding_message_size(16 << 20);
    let huge = "w".repeat(3 << 20);
    for bad in ["a\nb", "tab\there", "nul\0", huge.as_str()] {
        let r = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: model("yawl/WPC1Sequence.yawl"),
                format: 0,
                workflow_id: bad.into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        bounded(&r, Code::InvalidArgument);
    }
    let r = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: huge.clone(),
            version: 0,
        })
        .await
        .expect_err("unknown");
    bounded(&r, Code::NotFound);
    assert!(r.message().contains("3145728 bytes"), "{}", r.message());
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "evil\n2026-01-01 INFO forged line".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    bounded(&r, Code::NotFound);
    assert!(r.message().contains("\\n"), "escaped: {}", r.message());

    // A valid id at the limit registers; tasks named wrongly are echoed bounded too.
    let id = "x".repeat(knhk_engine::error::MAX_ID_BYTES);
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: 0,
            workflow_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("an id of the maximum length registers")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!(wf.workflow_id, id);
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: id,
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("case")
        .into_inner();
    let r = c
        .fire_task(proto::TaskRequest {
            case_id: case.case_id,
            task: "t".repeat(1 << 20),
            ..Default::default()
        })
        .await
        .expect_err("no such task");
    bounded(&r, Code::NotFound);
    srv.shutdown().await;
}

/// `CreateCaseRequest` as bytes on the wire: field 1 (`workflow_id`) without the UTF-8
/// check a `string` field gets, so the test can send what a broken or hostile client sends.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCreateCase {
    #[prost(bytes = "vec", tag = "1")]
    workflow_id: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_is_invalid_argument_not_internal() {
    let srv = start(config(1, 64, 64)).await;
    let channel = tonic::transport::Endpoint::from_shared(srv.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = |bytes: Vec<u8>| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.expect("ready");
            grpc.unary(
                tonic::Request::new(RawCreateCase { workflow_id: bytes }),
                tonic::codegen::http::uri::PathAndQuery::from_static("/knhk.v1.Knhk/CreateCase"),
                tonic_prost::ProstCodec::<RawCreateCase, proto::Case>::default(),
            )
            .await
        }
    };
    let r = call(vec![b'w', 0xff, 0xfe]).await.expect_err("not UTF-8");
    assert_eq!(r.code(), Code::InvalidArgument, "{r}");
    assert!(r.message().contains("malformed message"), "{}", r.message());
    // The same call with a valid (unknown) id decodes and gets its own answer.
    let r = call(b"nope".to_vec()).await.expect_err("unknown workflow");
    assert_eq!(r.code(), Code::NotFound, "{r}");
    grpc.ready().await.expect("the connection is still usable");
    srv.shutdown().await;
}
