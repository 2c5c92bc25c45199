//! The bound on `spec.actions`, designed so that it never blocks a pause or a rollback.
//!
//! Admission accepts one new entry per request and keeps the log's last slots for Pause
//! and Rollback. The operator removes the entries it has processed once they are many
//! (compaction), in one write together with the `switchyard.dev/actions-compacted`
//! annotation, which counts every entry removed so far. `status.actionsProcessed` counts
//! every entry ever processed, so entry `i` of `spec.actions` is action number
//! `compacted + i`. What a removed entry did is in the history and in Events already.
//! While an operator runs, the log therefore never fills, whatever came before; while
//! none runs, the reserved slots keep room for a pause or a rollback.

/// The annotation that counts the entries the operator has removed from `spec.actions`.
pub const COMPACTED_ANNOTATION: &str = "switchyard.dev/actions-compacted";

/// The schema's bound on `spec.actions` (`maxItems`).
pub const MAX_ACTIONS: usize = 1024;

/// From this many entries on, admission accepts only Pause and Rollback on a wave.
pub const RESERVED_FROM: usize = 960;

/// The operator compacts once this many processed entries are in the log. High enough
/// that an ordinary programme (dozens of actions) keeps its whole log in the object.
pub const COMPACT_AT: usize = 128;

/// Entries to drop from the front of `spec.actions`, and the annotation's value after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// How many entries to remove from the front (all of them processed).
    pub drop: usize,
    /// The `switchyard.dev/actions-compacted` value to write with the removal.
    pub compacted: u64,
}

/// The index into `spec.actions` (of `len` entries) of the first unprocessed entry.
pub fn first_unprocessed(processed: i32, compacted: u64, len: usize) -> usize {
    let processed = u64::try_from(processed).unwrap_or(0);
    usize::try_from(processed.saturating_sub(compacted))
        .unwrap_or(usize::MAX)
        .min(len)
}

/// The compaction due once `processed` entries (counted since the first) are processed.
pub fn compaction_due(processed: i32, compacted: u64, len: usize) -> Option<Compaction> {
    let drop = first_unprocessed(processed, compacted, len);
    (drop >= COMPACT_AT).then_some(Compaction {
        drop,
        compacted: compacted + drop as u64,
    })
}

/// The annotation's value on an object: 0 when absent or unreadable.
pub fn compacted_of(annotations: Option<&std::collections::BTreeMap<String, String>>) -> u64 {
    annotations
        .and_then(|a| a.get(COMPACTED_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_unprocessed_entry_accounts_for_compaction() {
        assert_eq!(first_unprocessed(0, 0, 3), 0);
        assert_eq!(first_unprocessed(2, 0, 3), 2);
        assert_eq!(first_unprocessed(130, 128, 5), 2);
        // A status older than the compaction cannot point before the log's start.
        assert_eq!(first_unprocessed(100, 128, 5), 0);
        assert_eq!(first_unprocessed(9, 0, 3), 3);
    }

    #[test]
    fn compaction_waits_for_many_processed_entries_and_drops_only_those() {
        assert_eq!(compaction_due(127, 0, 200), None);
        assert_eq!(
            compaction_due(128, 0, 200),
            Some(Compaction {
                drop: 128,
                compacted: 128
            })
        );
        assert_eq!(
            compaction_due(300, 128, 180),
            Some(Compaction {
                drop: 172,
                compacted: 300
            })
        );
    }

    #[test]
    fn a_missing_or_garbled_annotation_counts_nothing() {
        let mut a = std::collections::BTreeMap::new();
        assert_eq!(compacted_of(None), 0);
        a.insert(COMPACTED_ANNOTATION.to_owned(), "x".to_owned());
        assert_eq!(compacted_of(Some(&a)), 0);
        a.insert(COMPACTED_ANNOTATION.to_owned(), "256".to_owned());
        assert_eq!(compacted_of(Some(&a)), 256);
    }
}
