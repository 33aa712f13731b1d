//! The admin against fake controllers: redirects, retries, pages, errors, deadlines.

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::*;
use crate::testing::fake_controller::FakeController;
use crate::testing::{fast_admin_options, within};

fn redirect(to: &str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-controller-leader", to.parse().unwrap());
    Status::with_metadata(Code::FailedPrecondition, "not the leader", metadata)
}

#[tokio::test]
async fn follows_a_not_leader_redirect_to_the_named_controller() {
    let a = FakeController::start(1).await;
    let b = FakeController::start(2).await;
    b.set_metadata(&[], "only-on-b", &[(0, 0)]);
    a.script().failures.push(redirect(&b.address()));
    let admin = Admin::connect(vec![a.address()], fast_admin_options())
        .await
        .unwrap();
    let topic = within("describe", admin.describe_topic("only-on-b"))
        .await
        .unwrap();
    assert_eq!(topic.name, "only-on-b");
    assert_eq!(admin.cached_leader().unwrap().address, b.address());
}

#[tokio::test]
async fn retries_unavailable_and_reports_a_retried_create_that_finds_the_topic() {
    let c = FakeController::start(1).await;
    c.script().failures = vec![Status::unavailable("commit timeout"); 2];
    let admin = Admin::new(vec![c.address()], fast_admin_options()).unwrap();
    let created = within(
        "create",
        admin.create_topic("t", 3, 1, pb::TopicConfig::default()),
    )
    .await
    .unwrap();
    assert_eq!(created.partitions.len(), 3);
    assert_eq!(c.script().created.len(), 3, "two refusals, then the create");

    // Exists already; the first attempt's outcome is unknown: the message says so.
    c.script().failures = vec![Status::unavailable("commit timeout")];
    let error = admin
        .create_topic("t", 3, 1, pb::TopicConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::AlreadyExists { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("may have created it"), "{error}");
    // Without an ambiguous attempt it is a plain AlreadyExists.
    let error = admin
        .create_topic("t", 3, 1, pb::TopicConfig::default())
        .await
        .unwrap_err();
    assert!(
        !error.to_string().contains("may have created it"),
        "{error}"
    );

    // A delete whose first attempt had an unknown outcome and whose retry finds nothing.
    assert!(admin.delete_topic("t").await.unwrap() > 0);
    c.script().failures = vec![Status::unavailable("commit timeout")];
    assert_eq!(admin.delete_topic("t").await.unwrap(), 0);
    let gone = admin.delete_topic("t").await.unwrap_err();
    assert!(matches!(gone, ClientError::NotFound { .. }) && !gone.is_retryable());
}

fn with_reason(code: Code, reason: &str) -> Status {
    Status::with_error_details(
        code,
        "refused",
        tonic_types::ErrorDetails::with_error_info(
            reason,
            "dmq.v1",
            std::collections::HashMap::new(),
        ),
    )
}

#[tokio::test]
async fn only_an_answer_that_may_have_applied_the_change_makes_a_retry_ambiguous() {
    let c = FakeController::start(1).await;
    let admin = Admin::new(vec![c.address()], fast_admin_options()).unwrap();
    admin
        .create_topic("t", 1, 1, pb::TopicConfig::default())
        .await
        .unwrap();
    // Refusals that say nothing was applied: the retry's ALREADY_EXISTS is the plain answer.
    for refusal in [
        with_reason(Code::ResourceExhausted, "CONTROLLER_OVERLOADED"),
        with_reason(Code::Unavailable, "NO_LEADER"),
    ] {
        c.script().failures = vec![refusal.clone()];
        let error = admin
            .create_topic("t", 1, 1, pb::TopicConfig::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::AlreadyExists { .. })
                && !error.to_string().contains("may have created it"),
            "after {refusal:?}: {error}"
        );
    }
    // OUTCOME_UNKNOWN: the change may have been applied, and the client says so.
    c.script().failures = vec![with_reason(Code::Unavailable, "OUTCOME_UNKNOWN")];
    let error = admin
        .create_topic("t", 1, 1, pb::TopicConfig::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("may have created it"), "{error}");
    let c = |s| ClientError::from_controller_status(s, "c1:9000");
    let overloaded = c(with_reason(
        Code::ResourceExhausted,
        "CONTROLLER_OVERLOADED",
    ));
    assert!(
        overloaded.is_retryable() && !overloaded.outcome_unknown(),
        "{overloaded}"
    );
    let unknown = c(with_reason(Code::Unavailable, "OUTCOME_UNKNOWN"));
    assert!(
        unknown.is_retryable() && unknown.outcome_unknown(),
        "{unknown}"
    );
}

#[tokio::test]
async fn lists_every_page_and_reports_unknown_topics_in_one_line() {
    let c = FakeController::start(1).await;
    let admin = Admin::new(vec![c.address()], fast_admin_options()).unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        admin
            .create_topic(name, 1, 1, pb::TopicConfig::default())
            .await
            .unwrap();
    }
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(c.script().list_requests.len(), 3, "pages of two");

    let error = admin.describe_topic("nope").await.unwrap_err();
    assert!(matches!(error, ClientError::NotFound { .. }));
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "not found: topic \"nope\" does not exist; list the topics or create it first"
    );

    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.leader_id, 1);
    let info = admin.controller_info(&c.address()).await.unwrap();
    assert_eq!(info.node_id, 1);
    assert!(admin.get_metadata().await.unwrap().metadata_version >= 5);
}

#[tokio::test]
async fn gives_up_at_the_deadline_when_no_controller_answers() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap().to_string();
    drop(free);
    let opts = AdminOptions {
        deadline: Duration::from_millis(300),
        ..fast_admin_options()
    };
    let start = std::time::Instant::now();
    let error = Admin::connect(vec![address.clone()], opts.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::NoLeader { .. }), "{error}");
    assert!(error.is_retryable());
    assert!(error.to_string().contains(&address), "{error}");
    let admin = Admin::new(vec![address], opts).unwrap();
    assert!(admin.list_topics().await.is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        Admin::new(vec![], AdminOptions::default()).unwrap_err(),
        ClientError::InvalidArgument { .. }
    ));
}
