//! What pulls may hold at once. A pull waits on its registry only: a
//! registry that accepts connections and never answers holds up its own
//! pulls, never the pulls of images from anywhere else. What a pull does
//! once its client has left is bounded apart, in time and in number.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use attestgate_policy::ImageRef;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::grpc::ProxyError;

/// Pulls from one registry at once. kubelet pulls one image at a time
/// unless told otherwise, and `maxParallelImagePulls` is a handful in
/// practice; 16 lets a node start a full set of pods from one registry at
/// once, and is all a registry that never answers can tie up. Past it,
/// pulls from that registry wait their turn, within their deadline.
pub const PER_REGISTRY: usize = 16;

/// Pulls whose client left that may be deciding what they brought at once:
/// each costs the runtime a lookup and perhaps a removal, and clients
/// that reset their pulls as fast as they can send them must not make
/// that pile up. The rest wait for one of these, within
/// `AFTER_THE_CLIENT_LEFT` in `pull.rs`.
pub const LEFT_BEHIND: usize = 64;
pub static LEFT_BEHIND_SLOTS: Semaphore = Semaphore::const_new(LEFT_BEHIND);

/// The pull permits of every registry being pulled from.
pub static REGISTRIES: Registries = Registries::new(PER_REGISTRY);

/// Permits by registry host. A host has an entry only while a pull holds
/// or waits for one of its permits, so clients naming made-up hosts
/// cannot grow the map past the pulls in progress.
pub struct Registries {
    per_registry: usize,
    hosts: Mutex<BTreeMap<Box<str>, Host>>,
}

struct Host {
    permits: Arc<Semaphore>,
    /// Pulls holding or waiting for one of `permits`.
    users: usize,
}

/// One pull's permit of its registry's.
pub struct RegistryPermit<'a> {
    _permit: OwnedSemaphorePermit,
    _user: User<'a>,
}

/// A pull's claim on its host's entry, released (and the entry dropped
/// with the last one) however the pull ends, waiting or not.
struct User<'a> {
    registries: &'a Registries,
    host: Box<str>,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut hosts = self.registries.lock();
        if let Some(host) = hosts.get_mut(&self.host) {
            host.users -= 1;
            if host.users == 0 {
                hosts.remove(&self.host);
            }
        }
    }
}

impl Registries {
    pub const fn new(per_registry: usize) -> Registries {
        Registries {
            per_registry,
            hosts: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Box<str>, Host>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit to pull from `host`, waited for `within` at most.
    pub async fn permit(
        &self,
        host: &str,
        within: Duration,
    ) -> Result<RegistryPermit<'_>, ProxyError> {
        let (user, permits) = {
            let mut hosts = self.lock();
            let entry = hosts.entry(host.into()).or_insert_with(|| Host {
                permits: Arc::new(Semaphore::new(self.per_registry)),
                users: 0,
            });
            entry.users += 1;
            let user = User {
                registries: self,
                host: host.into(),
            };
            (user, entry.permits.clone())
        };
        let permit = tokio::time::timeout(within, permits.acquire_owned())
            .await
            .map_err(|_| ProxyError::Deadline)?
            .map_err(|_| ProxyError::Internal("pull permits are closed".into()))?;
        Ok(RegistryPermit {
            _permit: permit,
            _user: user,
        })
    }

    /// Hosts with a pull holding or waiting for a permit.
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.lock().len()
    }
}

/// The registry an image is pulled from, as its permits are keyed: host
/// names are case-insensitive, so `Registry.Test` and `registry.test`
/// share theirs.
pub fn registry_of(image: &ImageRef) -> String {
    let host = image
        .repository
        .split_once('/')
        .map_or(image.repository.as_str(), |(host, _)| host);
    host.to_ascii_lowercase()
}

/// A slot of [`LEFT_BEHIND_SLOTS`].
pub async fn left_behind_slot() -> Result<SemaphorePermit<'static>, ProxyError> {
    LEFT_BEHIND_SLOTS
        .acquire()
        .await
        .map_err(|_| ProxyError::Internal("pull slots are closed".into()))
}

/// Pulls in progress, counted so that shutdown can wait for them.
static IN_PROGRESS: AtomicUsize = AtomicUsize::new(0);
static NONE_IN_PROGRESS: Notify = Notify::const_new();

/// One pull in progress, from its start to its end, client or none.
pub struct InProgress(());

impl InProgress {
    pub fn enter() -> InProgress {
        IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
        InProgress(())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if IN_PROGRESS.fetch_sub(1, Ordering::SeqCst) == 1 {
            NONE_IN_PROGRESS.notify_waiters();
        }
    }
}

/// Resolves once no pull is in progress.
pub async fn all_finished() {
    loop {
        // Registered before the count is read, so the last pull's notice
        // cannot fall between the two.
        let notified = NONE_IN_PROGRESS.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if IN_PROGRESS.load(Ordering::SeqCst) == 0 {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_never_answers_holds_its_own_permits_only() {
        let registries = Registries::new(2);
        let within = Duration::from_secs(60);
        let hung = [
            registries.permit("hung.test", within).await.unwrap(),
            registries.permit("hung.test", within).await.unwrap(),
        ];
        // Its next pull waits, for its deadline at most.
        let waited = registries.permit("hung.test", Duration::from_secs(5)).await;
        assert!(matches!(waited, Err(ProxyError::Deadline)));
        // Another registry's pulls do not wait at all.
        let other = tokio::time::timeout(
            Duration::from_millis(1),
            registries.permit("registry.test", within),
        )
        .await;
        assert!(matches!(other, Ok(Ok(_))));
        drop(other);
        assert_eq!(registries.hosts(), 1, "the other host's entry went with it");
        drop(hung);
        assert_eq!(registries.hosts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn made_up_hosts_leave_nothing_behind_waiting_or_holding() {
        let registries = Registries::new(1);
        let within = Duration::from_secs(60);
        for i in 0..1000 {
            let host = format!("{i}.made-up.test");
            let held = registries.permit(&host, within).await.unwrap();
            // A pull given up on while it waits for the permit.
            let waiting = registries.permit(&host, within);
            assert!(
                tokio::time::timeout(Duration::from_millis(1), waiting)
                    .await
                    .is_err()
            );
            drop(held);
        }
        assert_eq!(registries.hosts(), 0);
    }

    #[test]
    fn pulls_are_keyed_by_registry_host_whatever_its_case() {
        let of = |r: &str| registry_of(&ImageRef::parse(r).unwrap());
        assert_eq!(of("Registry.Test:5000/app:1"), "registry.test:5000");
        assert_eq!(of("nginx"), "docker.io");
        assert_eq!(
            of(&format!("127.0.0.1:9/a@sha256:{}", "a".repeat(64))),
            "127.0.0.1:9"
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_pulls_in_progress_only() {
        // Other tests' pulls may be in progress too: only ours are known.
        let ours = InProgress::enter();
        let waiting = tokio::spawn(all_finished());
        tokio::task::yield_now().await;
        drop(ours);
        let done = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(done.is_ok(), "all_finished did not resolve");
    }
}
