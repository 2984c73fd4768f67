//! A topic's log in memory: its committed range and a cache of its most recent events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ovasabi_core::Event;
use tokio::sync::Notify;

/// One stored event, as consumers receive it.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) offset: u64,
    pub(crate) published_at: DateTime<Utc>,
    pub(crate) event: Arc<Event>,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) size: usize,
}

impl Stored {
    pub(crate) fn new(
        offset: u64,
        published_at: DateTime<Utc>,
        event: Arc<Event>,
        size: usize,
    ) -> Self {
        let key = event.partition_key().map(Arc::from);
        Stored {
            offset,
            published_at,
            event,
            key,
            size,
        }
    }
}

/// What is known of a topic's log. Offsets in `first_offset..next_offset` are committed.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    pub(crate) first_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) total_bytes: u64,
    /// The newest events, contiguous, ending at `next_offset - 1`.
    cache: VecDeque<Arc<Stored>>,
    cache_bytes: usize,
}

impl LogState {
    pub(crate) fn new(first_offset: u64, next_offset: u64, total_bytes: u64) -> Self {
        LogState {
            first_offset,
            next_offset,
            total_bytes,
            cache: VecDeque::new(),
            cache_bytes: 0,
        }
    }

    fn cache_start(&self) -> u64 {
        self.cache.front().map_or(self.next_offset, |s| s.offset)
    }

    /// Up to `limit` events from `from`, if the cache holds `from`.
    pub(crate) fn cached_from(&self, from: u64, limit: usize) -> Option<Vec<Arc<Stored>>> {
        let start = self.cache_start();
        if from < start || from < self.first_offset {
            return None;
        }
        let skip = usize::try_from(from - start).ok()?;
        Some(self.cache.iter().skip(skip).take(limit).cloned().collect())
    }
}

/// A topic: its name, storage id, log state and the groups to wake when it grows.
#[derive(Debug)]
pub(crate) struct TopicLog {
    pub(crate) name: String,
    pub(crate) id: i64,
    pub(crate) state: Mutex<LogState>,
    watchers: Mutex<Vec<Arc<Notify>>>,
    cache_limit: usize,
}

impl TopicLog {
    pub(crate) fn new(name: String, id: i64, state: LogState, cache_limit: usize) -> Self {
        TopicLog {
            name,
            id,
            state: Mutex::new(state),
            watchers: Mutex::new(Vec::new()),
            cache_limit,
        }
    }

    /// Adds newly committed events (contiguous from `next_offset`) and wakes the watchers.
    pub(crate) fn append_committed(&self, events: Vec<Arc<Stored>>) {
        {
            let mut st = self.state.lock().unwrap();
            for s in events {
                debug_assert_eq!(s.offset, st.next_offset);
                st.next_offset = s.offset + 1;
                st.total_bytes += s.size as u64;
                st.cache_bytes += s.size;
                st.cache.push_back(s);
            }
            while st.cache_bytes > self.cache_limit && st.cache.len() > 1 {
                if let Some(old) = st.cache.pop_front() {
                    st.cache_bytes -= old.size;
                }
            }
        }
        self.wake();
    }

    /// Forgets events below `first_offset` after retention removed them.
    pub(crate) fn truncate_front(&self, first_offset: u64, removed_bytes: u64) {
        let mut st = self.state.lock().unwrap();
        st.first_offset = first_offset;
        st.total_bytes = st.total_bytes.saturating_sub(removed_bytes);
        while st.cache.front().is_some_and(|s| s.offset < first_offset) {
            if let Some(old) = st.cache.pop_front() {
                st.cache_bytes -= old.size;
            }
        }
    }

    pub(crate) fn watch(&self, notify: Arc<Notify>) {
        let mut w = self.watchers.lock().unwrap();
        if !w.iter().any(|n| Arc::ptr_eq(n, &notify)) {
            w.push(notify);
        }
    }

    pub(crate) fn wake(&self) {
        for n in self.watchers.lock().unwrap().iter() {
            n.notify_waiters();
        }
    }

    pub(crate) fn range(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.first_offset, st.next_offset)
    }
}
