//! The integrity checks of a log, event by event from position 1:
//!
//! - positions run 1, 2, 3, … without a gap;
//! - each event's link is `SHA-256(previous link || its canonical bytes)`
//!   (`tenure_events::chain`): an edited, removed, reordered or inserted
//!   event breaks the chain at its position;
//! - each stream's versions run 1, 2, 3, … without a gap;
//! - every event decodes (older schema versions through their upcasters);
//! - with an expected head (`POSITION:HASH` recorded elsewhere), the log
//!   reaches that position with that link: this alone detects a cut-off
//!   tail, or a log rewritten and re-chained from the start.
//!
//! The first thing wrong stops the check and is named with its position.

use std::collections::HashMap;

use tenure_events::{ChainHash, ChainHead, Event, RecordedEvent, StreamId};

/// What is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {what}")]
pub struct Problem {
    pub position: u64,
    pub what: String,
}

/// Checks a log fed to it in position order.
pub struct Verifier {
    /// Check links (a log written before the chain has none).
    chained: bool,
    expect_head: Option<ChainHead>,
    next_position: u64,
    link: ChainHash,
    versions: HashMap<StreamId, u64, foldhash::fast::RandomState>,
    /// The link at the expected head's position, once passed.
    link_at_expected: Option<ChainHash>,
}

/// What a log that passed holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub head: ChainHead,
    pub streams: usize,
}

impl Verifier {
    pub fn new(chained: bool, expect_head: Option<ChainHead>) -> Verifier {
        Verifier {
            chained,
            expect_head,
            next_position: 1,
            link: ChainHash::ZERO,
            versions: HashMap::default(),
            link_at_expected: None,
        }
    }

    /// Checks the next event of the log.
    pub fn check(&mut self, event: &RecordedEvent) -> Result<(), Problem> {
        let problem = |position: u64, what: String| Err(Problem { position, what });
        let expected = self.next_position;
        if event.position > expected {
            let missing = if event.position == expected + 1 {
                format!("the event at position {expected} is missing")
            } else {
                format!(
                    "the events at positions {expected} to {} are missing",
                    event.position - 1
                )
            };
            return problem(expected, format!("{missing} (the log goes on at {})", event.position));
        }
        if event.position < expected {
            return problem(
                event.position,
                format!("position {} comes again after {}", event.position, expected - 1),
            );
        }
        if self.chained {
            if event.hash == ChainHash::ZERO {
                return problem(event.position, "the event has no chain hash".into());
            }
            if self.link.next(event) != event.hash {
                return problem(
                    event.position,
                    "the event does not match its chain hash: it was changed, or the link before it was".into(),
                );
            }
        }
        let version = self.versions.entry(event.stream.clone()).or_default();
        if event.version != *version + 1 {
            return problem(
                event.position,
                format!(
                    "stream {} goes from version {} to {} (a version is missing or repeated)",
                    event.stream, *version, event.version
                ),
            );
        }
        *version = event.version;
        if let Err(e) = Event::decode(&event.event_type, event.schema_version, &event.payload) {
            return problem(event.position, format!("the event does not decode: {e}"));
        }
        self.link = event.hash;
        self.next_position += 1;
        if self.expect_head.is_some_and(|h| h.position == event.position) {
            self.link_at_expected = Some(event.hash);
        }
        Ok(())
    }

    /// The last position checked.
    pub fn position(&self) -> u64 {
        self.next_position - 1
    }

    /// Ends the check once the whole log was fed.
    pub fn finish(&self) -> Result<Verified, Problem> {
        let head = ChainHead {
            position: self.position(),
            hash: self.link,
        };
        if let Some(expected) = self.expect_head {
            if head.position < expected.position {
                return Err(Problem {
                    position: head.position + 1,
                    what: format!(
                        "the log ends at position {} but the expected head is {expected}: events were cut off",
                        head.position
                    ),
                });
            }
            if self.chained && self.link_at_expected != Some(expected.hash) {
                return Err(Problem {
                    position: expected.position,
                    what: format!(
                        "the link here is {}, not the expected head's {}: the log was rewritten up to here",
                        self.link_at_expected.unwrap_or_default(),
                        expected.hash
                    ),
                });
            }
        }
        Ok(Verified {
            head,
            streams: self.versions.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use tenure_events::{AccountId, EventSet, LeaseEvent, LeaseGranted, LeaseId, Metadata, NewEvent};

    /// A chained log of `n` grants on `streams` lease streams, round robin.
    fn log(n: u64, streams: u64) -> Vec<RecordedEvent> {
        let account = AccountId::default_account();
        let mut link = ChainHash::ZERO;
        let mut versions = HashMap::new();
        (1..=n)
            .map(|position| {
                let lease = LeaseId::new(((position - 1) % streams + 1) as i64).expect("positive");
                let e = LeaseEvent::from(LeaseGranted {
                    lease,
                    ttl_s: 10,
                    requested_ttl_s: 10,
                });
                let time = DateTime::from_timestamp(1_767_225_600 + position as i64, 0).unwrap_or_default();
                let new = NewEvent::new(&e, &Metadata::new(account.clone()), time);
                assert_eq!(new.event_type, e.event_type());
                let version = versions.entry(lease).or_insert(0u64);
                *version += 1;
                let mut recorded =
                    RecordedEvent::from_new(new, tenure_events::StreamId::lease(&account, lease), *version, position);
                recorded.chain_after(&link);
                link = recorded.hash;
                recorded
            })
            .collect()
    }

    fn rechain(events: &mut [RecordedEvent]) {
        let mut link = ChainHash::ZERO;
        for e in events {
            e.chain_after(&link);
            link = e.hash;
        }
    }

    fn verify(events: &[RecordedEvent], expect: Option<ChainHead>) -> Result<Verified, Problem> {
        let mut v = Verifier::new(true, expect);
        for e in events {
            v.check(e)?;
        }
        v.finish()
    }

    fn fails_at(result: Result<Verified, Problem>, position: u64, has: &str) {
        let problem = result.expect_err("the check fails");
        assert_eq!(problem.position, position, "{problem}");
        assert!(problem.what.contains(has), "{problem}");
    }

    #[test]
    fn an_untouched_log_passes_and_names_its_head() {
        let events = log(20, 3);
        let verified = verify(&events, None).expect("passes");
        assert_eq!(verified.head.position, 20);
        assert_eq!(verified.head.hash, events[19].hash);
        assert_eq!(verified.streams, 3);
        assert!(verify(&events, Some(verified.head)).is_ok());
        let earlier = ChainHead {
            position: 7,
            hash: events[6].hash,
        };
        assert!(
            verify(&events, Some(earlier)).is_ok(),
            "a head recorded earlier still holds"
        );
        assert!(verify(&[], None).is_ok());
    }

    #[test]
    fn each_kind_of_damage_is_named_with_its_position() {
        let events = log(20, 3);
        let mut edited = events.clone();
        edited[9].payload = edited[9].payload.replace("10", "11");
        fails_at(verify(&edited, None), 10, "does not match its chain hash");

        let mut removed = events.clone();
        removed.remove(11);
        fails_at(verify(&removed, None), 12, "position 12 is missing");

        let mut swapped = events.clone();
        let payload = swapped[4].payload.clone();
        swapped[4].payload = swapped[12].payload.clone();
        swapped[12].payload = payload;
        assert_ne!(swapped[4].payload, events[4].payload, "two different payloads");
        fails_at(verify(&swapped, None), 5, "does not match its chain hash");

        let mut relinked = events.clone();
        relinked[2].hash = ChainHash([7; 32]);
        fails_at(verify(&relinked, None), 3, "does not match its chain hash");

        let mut unlinked = events.clone();
        unlinked[0].hash = ChainHash::ZERO;
        fails_at(verify(&unlinked, None), 1, "no chain hash");

        // What the chain cannot see, because whoever wrote it linked it
        // (a bug, or a rewrite from the start): the other checks do.
        let mut repeated = events.clone();
        repeated[5].version = 1;
        rechain(&mut repeated);
        fails_at(verify(&repeated, None), 6, "goes from version 1 to 1");

        let mut undecodable = log(3, 1);
        undecodable[2].payload = "{}".into();
        rechain(&mut undecodable);
        fails_at(verify(&undecodable, None), 3, "does not decode");

        let head = ChainHead {
            position: 20,
            hash: events[19].hash,
        };
        fails_at(verify(&events[..17], Some(head)), 18, "events were cut off");
        let rechained = log(20, 3);
        fails_at(verify(&rechained, Some(head)), 20, "rewritten up to here");
    }
}
