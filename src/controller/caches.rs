//! The operator's own caches of grants and targets. The grant controller runs on the grant
//! cache's own stream ([`Cache::driving`]), so grants are kept once, without managedFields.
//!
//! kube-runtime's `Store::wait_until_ready` keeps one waker: with two waiters on one store
//! (the controller's runner, which holds reconciles until its store is ready, and anyone else)
//! one of them is never woken. A controller whose runner lost that race never reconciles at
//! all. So nothing of ours waits on a controller's store: these caches are driven by our own
//! watches, and say they have listed everything through a `watch` channel, which wakes every
//! waiter.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A cache of every object of one kind, and whether it has listed them all once.
#[derive(Clone)]
pub struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The objects, as last seen.
    pub store: Store<K>,
    /// `true` once the first list is complete.
    pub synced: watch::Receiver<bool>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Start watching `api` into a new cache until `shutdown` (nothing else consumes it).
    pub fn spawn(api: Api<K>, config: watcher::Config, shutdown: CancellationToken) -> Self {
        let (cache, objects) = Self::driving(api, config);
        let events = objects.for_each(|_| std::future::ready(()));
        tokio::spawn(async move {
            tokio::select! {
                () = events => {}
                () = shutdown.cancelled() => {}
            }
        });
        cache
    }

    /// A cache whose watch is not spawned but handed back as the stream of objects it
    /// applied, to drive a controller (`Controller::for_stream`): the controller and the rest
    /// of the operator then share this one pruned copy of every object, instead of the
    /// controller keeping a second, full one. The cache is updated as the stream is polled.
    pub fn driving(
        api: Api<K>,
        config: watcher::Config,
    ) -> (
        Self,
        impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    ) {
        let (store, writer) = reflector::store();
        let (tx, synced) = watch::channel(false);
        let objects = watcher(api, config)
            .default_backoff()
            // Nothing of ours reads managedFields, and at thousands of objects they are most
            // of the cache's memory.
            .modify(|object| object.meta_mut().managed_fields = None)
            .reflect(writer)
            .inspect(move |event| {
                if let Ok(watcher::Event::InitDone) = event {
                    tx.send_replace(true);
                }
            })
            .applied_objects();
        (Self { store, synced }, objects)
    }

    /// Wait until the first list is complete (`false` if the watch stopped before).
    pub async fn wait_synced(&self) -> bool {
        let mut synced = self.synced.clone();
        synced.wait_for(|listed| *listed).await.is_ok()
    }
}
