//! What keeps a daemon busy, for its idle exit: requests as they arrive, and the long
//! work some of them start (a followed task, an image build, a `run`) until it ends. A
//! stream or an upgraded connection outlives its request, so the request alone does not
//! tell.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct Activity {
    inner: Arc<Inner>,
}

struct Inner {
    last_ms: AtomicI64,
    busy: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            inner: Arc::new(Inner {
                last_ms: AtomicI64::new(hangar_store::db::now_ms()),
                busy: AtomicUsize::new(0),
            }),
        }
    }
}

impl Activity {
    /// A request arrived.
    pub(crate) fn touch(&self) {
        self.inner
            .last_ms
            .store(hangar_store::db::now_ms(), Ordering::Relaxed);
    }

    /// Long work under way until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy {
        self.inner.busy.fetch_add(1, Ordering::Relaxed);
        Busy {
            activity: self.clone(),
        }
    }

    /// How long nothing has happened, in milliseconds; `None` while work is under way.
    pub fn quiet_ms(&self) -> Option<i64> {
        (self.inner.busy.load(Ordering::Relaxed) == 0)
            .then(|| hangar_store::db::now_ms() - self.inner.last_ms.load(Ordering::Relaxed))
    }
}

/// Long work under way; see [`Activity::busy`].
pub(crate) struct Busy {
    activity: Activity,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.inner.busy.fetch_sub(1, Ordering::Relaxed);
        // The work's end counts as activity, so the quiet spell starts from it.
        self.activity.touch();
    }
}
