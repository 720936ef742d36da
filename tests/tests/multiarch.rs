//! The multi-arch link (SPEC §11, last paragraph) on real containerd: an
//! image index pulled by tag through containerd's CRI, and the proxy's
//! content-store reader naming the index and exactly the platform manifest
//! this node pulled, though containerd labels every child on the index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use attestgate_e2e::node::Node;
use attestgate_proxy::content::{CRI_NAMESPACE, ContentStore, PlatformLink};

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

fn content_store(node: &Node) -> ContentStore {
    ContentStore::new(
        &node.containerd_sock,
        CRI_NAMESPACE,
        Duration::from_secs(10),
    )
}

/// `ctr content ls`: every blob in containerd's content store, with its labels.
fn content(node: &Node) -> String {
    node.sh("ag_ctr \"$DIR\" content ls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_pulled_through_an_index_is_read_from_containerd() {
    let Some(node) = Node::up(&agcri()) else {
        return;
    };
    let multi = node.push_multiarch("multi", "1");
    let other = multi
        .platform_digests
        .iter()
        .find(|(_, digest)| *digest != multi.this_platform_digest)
        .map(|(_, digest)| digest.clone())
        .expect("a second platform");

    let cri = node.direct().await;
    let image_id = cri.pull(&multi.reference, None).await.expect("pull by tag");
    let status = cri
        .image_status(&multi.reference)
        .await
        .unwrap()
        .expect("the image is on the node");
    let repo = multi.reference.rsplit_once(':').unwrap().0;
    let by_digest = format!("{repo}@{}", multi.index_digest);
    assert_eq!(status.id, image_id);
    assert_eq!(status.repo_digests, vec![by_digest.clone()], "{status:?}");

    // The premise: the index's labels name both children, yet only this
    // machine's manifest was fetched.
    let listing = content(&node);
    let index_line = listing
        .lines()
        .find(|l| l.starts_with(&multi.index_digest))
        .unwrap_or_else(|| panic!("the index is not in the content store:\n{listing}"));
    assert!(index_line.contains(&other), "{index_line}");
    assert!(
        index_line.contains(&multi.this_platform_digest),
        "{index_line}"
    );
    assert!(
        !listing.lines().any(|l| l.starts_with(&other)),
        "the other platform was fetched:\n{listing}"
    );

    let store = content_store(&node);
    for name in [multi.reference.as_str(), by_digest.as_str()] {
        let link = store
            .platform_link(name, &image_id)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no link"));
        let PlatformLink { index, platform } = link;
        assert_eq!(index.as_str(), multi.index_digest, "{name}");
        assert_eq!(platform.as_str(), multi.this_platform_digest, "{name}");
        assert_ne!(platform.as_str(), other, "{name}");
    }

    // Another image's id is no child of this index, whatever its labels say.
    let app_id = cri.pull(&node.app_image, None).await.expect("app pulls");
    assert_eq!(
        store
            .platform_link(&multi.reference, &app_id)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_manifest_image_has_no_platform_link() {
    let Some(node) = Node::up(&agcri()) else {
        return;
    };
    let cri = node.direct().await;
    let image_id = cri.pull(&node.app_image, None).await.expect("app pulls");
    let store = content_store(&node);
    assert_eq!(
        store
            .platform_link(&node.app_image, &image_id)
            .await
            .unwrap(),
        None
    );
    let repo = node.app_image.rsplit_once(':').unwrap().0;
    let by_digest = format!("{repo}@{}", node.app_digest);
    assert_eq!(
        store.platform_link(&by_digest, &image_id).await.unwrap(),
        None
    );
    // An image containerd does not have is containerd's NotFound.
    let missing = store
        .platform_link(&format!("{repo}:absent"), &image_id)
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, attestgate_proxy::content::ContentError::Containerd { status, .. } if status.code() == tonic::Code::NotFound),
        "{missing:?}"
    );
}
