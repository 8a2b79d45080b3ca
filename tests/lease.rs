//! Job leases against the real Redis: one holder at a time, fencing tokens that grow, a
//! lost lease noticed, and a stale holder's checkpoint refused.

mod common;

use std::time::Duration;

use sluice::settings::Settings;
use sluice::state::StateStore;

/// A store on its own key prefix, and that prefix (to wipe at the end).
async fn store() -> (StateStore, String) {
    let settings = Settings::default();
    let prefix = format!(
        "test-lease-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let state = StateStore::connect(&settings.redis, &prefix)
        .await
        .expect("Redis (is it running?)");
    (state, prefix)
}

#[tokio::test]
async fn a_stale_owner_can_neither_renew_nor_checkpoint() {
    let (state, prefix) = store().await;
    let job = sluice::job::new_job_id();
    let first = state
        .acquire_job_lease(&job, "worker-a", 300)
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        state
            .acquire_job_lease(&job, "worker-b", 300)
            .await
            .unwrap()
            .is_none(),
        "a held lease is not taken"
    );
    assert!(state.renew_job_lease(&job, &first, 300).await.unwrap());
    assert!(
        state
            .commit_checkpoint(&job, &first, "ckpt-1")
            .await
            .unwrap()
    );

    // worker-a stalls past its lease; worker-b takes over with a greater token.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = state
        .acquire_job_lease(&job, "worker-b", 5_000)
        .await
        .unwrap()
        .expect("expired lease is free");
    assert!(second.token > first.token);
    assert!(
        !state.renew_job_lease(&job, &first, 300).await.unwrap(),
        "loss noticed"
    );
    assert!(
        !state
            .commit_checkpoint(&job, &first, "ckpt-stale")
            .await
            .unwrap(),
        "fenced"
    );
    assert_eq!(
        state.checkpoint_pointer(&job).await.unwrap().as_deref(),
        Some("ckpt-1")
    );
    assert!(
        state
            .commit_checkpoint(&job, &second, "ckpt-2")
            .await
            .unwrap()
    );
    assert_eq!(
        state.checkpoint_pointer(&job).await.unwrap().as_deref(),
        Some("ckpt-2")
    );

    // Releasing with the stale lease does nothing; the holder's release frees it.
    state.release_job_lease(&job, &first).await.unwrap();
    assert!(
        state
            .acquire_job_lease(&job, "worker-c", 300)
            .await
            .unwrap()
            .is_none()
    );
    state.release_job_lease(&job, &second).await.unwrap();
    let third = state
        .acquire_job_lease(&job, "worker-c", 300)
        .await
        .unwrap()
        .expect("released lease is free");
    assert!(third.token > second.token);
    let wiped = common::state::wipe_prefix(&Settings::default().redis, &prefix)
        .await
        .unwrap();
    assert!(wiped >= 2, "the lease's keys were under the test's prefix");
}
