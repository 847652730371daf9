//! The durable "re-joining" state of a member that lost its volume (or never had one).
//!
//! A member that starts on an empty volume has forgotten every vote it cast and every entry it
//! acknowledged. Until the leader has re-admitted it (AddLearner removes the old voter of that
//! id, adds it back as a learner, then Promote makes it a voter again), counting it in any quorum
//! could lose acknowledged writes or elect two leaders in one term. Four rules keep it out:
//!
//! 1. **No votes, no elections.** It grants no vote and its own election timer is off
//!    (`runtime_config().elect(false)`); election steering from other members is refused.
//! 2. **No traffic from before its re-admission.** It remembers the highest term it learned from
//!    the cluster when it asked to be (re-)added — the *fence* — and refuses appends and
//!    snapshots from leaders of older terms: a deposed leader that still believes it leads could
//!    otherwise complete a quorum with the forgetful member.
//! 3. **Re-admitted means the leader's word and its own log agree.** The leader answers the
//!    promotion with the index of the membership entry that makes this member a voter again;
//!    the member ends re-joining only once its own log holds that entry (its effective
//!    membership is at least that new, and it has applied that far) and it is a voter in it.
//!    Its own membership alone is not enough: while it catches up it walks through every
//!    membership since the leader's snapshot, and a snapshot taken while the set was scaled to
//!    one member lists it as the *only* voter. openraft counts a learner as caught up while it
//!    is still thousands of entries behind, so the promotion can arrive in that window; a member
//!    that then turned elections on, and lost its leader, elected itself alone in that old
//!    membership and forked the cluster (found by the chaos soak: scale to one and back, then
//!    wipe kv-0). See [`readmitted`]. (A leader of a version before this rule answers the
//!    promotion without the index, read as 0: during such a rolling update the member falls back
//!    to seeing itself a voter in an applied membership.)
//! 4. **It survives restarts.** The state is a file on the data volume, `kvset-rejoin.json`,
//!    written before the member asks anyone to add it (and before it accepts any Raft traffic),
//!    and removed only once it is re-admitted (rule 3). A member that crashes half-way restarts
//!    with Raft state but still finds the file: it does not trust its local membership (which may
//!    show it a voter already), keeps elections off and asks to be re-admitted again.
//!
//! The file lives beside the volume's ownership record, not inside the store, and is written with
//! temp file, fsync, rename and fsync of the directory, so a crash leaves the old state or the
//! new one, never a torn file. (The ownership record itself has a different owner and lifecycle;
//! this module keeps its own small file rather than widening that record.)

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the marker inside the data dir.
pub const REJOIN_FILE: &str = "kvset-rejoin.json";
const FORMAT: u32 = 1;

/// Why the marker could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RejoinError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unreadable re-join marker ({reason}); it is safe to keep it and let the member re-join: do not delete it by hand while the member is not a voter")]
    Corrupt { path: String, reason: String },
}

/// What the marker records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinState {
    pub format: u32,
    /// Refuse appends and snapshots from leaders of terms below this.
    pub fence_term: u64,
}

impl RejoinState {
    /// A state fencing off terms below `fence_term`.
    pub fn new(fence_term: u64) -> Self {
        Self {
            format: FORMAT,
            fence_term,
        }
    }
}

/// The marker file of one data dir.
#[derive(Clone, Debug)]
pub struct RejoinMarker {
    path: PathBuf,
}

impl RejoinMarker {
    /// The marker of the data dir `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(REJOIN_FILE),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> RejoinError + '_ {
        move |source| RejoinError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The recorded state; None when the member is not re-joining.
    pub fn load(&self) -> Result<Option<RejoinState>, RejoinError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io()(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RejoinError::Corrupt {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Durably records `state` (replacing any previous one).
    pub fn store(&self, fence_term: u64) -> Result<(), RejoinError> {
        let state = RejoinState::new(fence_term);
        let json = serde_json::to_vec(&state).expect("the marker always serializes");
        crate::volume::write_atomically(&self.path, &json).map_err(self.io())
    }

    /// Durably removes the marker: the member was re-admitted.
    pub fn clear(&self) -> Result<(), RejoinError> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io()(e)),
        }
        crate::volume::sync_dir(&self.path).map_err(self.io())
    }
}

/// What a re-joining member sees of itself, for [`readmitted`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalView {
    /// It is a voter in its effective membership.
    pub is_voter: bool,
    /// The log index of its effective membership entry (0 if none).
    pub membership_index: u64,
    /// Its last applied log index (0 if none).
    pub applied_index: u64,
    /// It knows a leader.
    pub leader_known: bool,
    /// Its current term.
    pub term: u64,
}

/// Whether a member re-joining in `state` is re-admitted: the leader confirmed it a voter in the
/// membership entry at `promoted_at` (None: no confirmation yet in this process), its own log
/// has reached and applied that entry, it is a voter in its effective membership, and it
/// follows a leader of at least the fence term (rule 3 of the module docs).
pub fn readmitted(state: &RejoinState, promoted_at: Option<u64>, view: &LocalView) -> bool {
    let Some(promoted_at) = promoted_at else {
        return false;
    };
    view.is_voter
        && view.membership_index >= promoted_at
        && view.applied_index >= promoted_at
        && view.leader_known
        && view.term >= state.fence_term
}

/// Whether Raft traffic from a leader of `term` may reach a member in `state`.
pub fn admits(state: Option<&RejoinState>, term: u64) -> bool {
    state.is_none_or(|s| term >= s.fence_term)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_survives_a_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let marker = RejoinMarker::new(dir.path());
        assert_eq!(marker.load().unwrap(), None);
        marker.store(7).unwrap();
        // A restart opens a new handle on the same dir.
        let again = RejoinMarker::new(dir.path());
        assert_eq!(again.load().unwrap().map(|s| s.fence_term), Some(7));
        again.store(9).unwrap();
        assert_eq!(marker.load().unwrap().map(|s| s.fence_term), Some(9));
        again.clear().unwrap();
        again.clear().unwrap();
        assert_eq!(marker.load().unwrap(), None);
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "no temp file left behind"
        );
    }

    #[test]
    fn a_torn_marker_is_an_error_not_a_silent_absence() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REJOIN_FILE), b"{\"format\":1,").unwrap();
        assert!(matches!(
            RejoinMarker::new(dir.path()).load(),
            Err(RejoinError::Corrupt { .. })
        ));
    }

    #[test]
    fn readmission_needs_the_leaders_confirmation_reached_in_the_own_log() {
        let state = RejoinState::new(5);
        let caught_up = LocalView {
            is_voter: true,
            membership_index: 120,
            applied_index: 130,
            leader_known: true,
            term: 6,
        };
        assert!(readmitted(&state, Some(120), &caught_up));
        assert!(
            !readmitted(&state, None, &caught_up),
            "no promotion confirmed by the leader in this process"
        );
        // Still catching up: a voter only in an older membership (a snapshot taken while the
        // set was scaled to one member lists it as the only voter).
        let historical = LocalView {
            membership_index: 36,
            applied_index: 59,
            ..caught_up
        };
        assert!(!readmitted(&state, Some(120), &historical));
        // The entry is in the log but not applied yet.
        let unapplied = LocalView {
            applied_index: 119,
            ..caught_up
        };
        assert!(!readmitted(&state, Some(120), &unapplied));
        for view in [
            LocalView {
                is_voter: false,
                ..caught_up
            },
            LocalView {
                leader_known: false,
                ..caught_up
            },
            LocalView {
                term: 4,
                ..caught_up
            },
        ] {
            assert!(!readmitted(&state, Some(120), &view), "{view:?}");
        }
    }

    #[test]
    fn traffic_from_terms_before_the_fence_is_refused() {
        let s = RejoinState {
            format: 1,
            fence_term: 5,
        };
        assert!(!admits(Some(&s), 4));
        assert!(admits(Some(&s), 5));
        assert!(admits(Some(&s), 6));
        assert!(
            admits(None, 0),
            "a member that is not re-joining admits any term"
        );
    }
}
