//! The harness itself: it starts a real control plane, enforces RBAC, and leaves nothing
//! behind when dropped, even when the test holding it panics.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::PostParams};
use switchyard_testenv::ControlPlane;

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only count processes that are not zombies.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn dropping_the_plane_stops_its_processes_and_deletes_its_files_even_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let plane = ControlPlane::start().expect("control plane starts");
        tx.send((
            plane.pids(),
            plane.dir().to_path_buf(),
            plane.kubeconfig_path().to_path_buf(),
        ))
        .unwrap();
        panic!("a test that fails while holding the control plane");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked as planned");
    let (pids, dir, kubeconfig) = rx.recv().unwrap();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver were running");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived its control plane");
    }
    assert!(
        !Path::new(&dir).exists(),
        "{} was not deleted",
        dir.display()
    );
    assert!(!kubeconfig.exists());
}

#[tokio::test]
async fn admin_is_allowed_and_a_user_without_rbac_is_refused() {
    let plane = ControlPlane::start().expect("control plane starts");
    let namespace = plane.create_namespace("rbac").await.unwrap();
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        ..Default::default()
    };

    let admin: Api<ConfigMap> = Api::namespaced(plane.client().await.unwrap(), &namespace);
    admin
        .create(&PostParams::default(), &cm)
        .await
        .expect("admin may create");

    let mallory = plane.client_as("mallory", &["outsiders"]).await.unwrap();
    let as_mallory: Api<ConfigMap> = Api::namespaced(mallory, &namespace);
    let err = as_mallory
        .get("probe")
        .await
        .expect_err("mallory has no RBAC rights");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("User \"mallory\" cannot get resource \"configmaps\""),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403 from the API server, got {other}"),
    }
}
