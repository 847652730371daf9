//! What a start does, decided from the ordinal and what the volume holds.
//!
//! | ordinal | volume                    | plan                                              |
//! |---------|---------------------------|---------------------------------------------------|
//! | 0       | empty                     | [`StartPlan::Initialize`]: mint a cluster id, become the only voter (the primary) |
//! | ≥ 1     | empty                     | [`StartPlan::Join`]: learn the cluster id, join as learner, catch up, get promoted |
//! | any     | Raft state (vote or log)  | [`StartPlan::Rejoin`]: start with the stored membership; never initialize again |
//! | any     | claimed, no Raft state, cluster id known | [`StartPlan::Join`] again (a join that crashed half-way) — except ordinal 0 with a minted id, see below |
//!
//! kv-0 on an empty volume first asks the other members whether a cluster already exists. On the
//! very first start they do not exist yet (StatefulSet order), so it initializes. If they answer
//! with a cluster id, kv-0's volume was lost or wiped while the cluster lived on: it joins like any
//! other member instead of forking a second cluster under the same names.
//!
//! kv-0 writes the cluster id into its volume *before* calling `initialize`; if it crashes in
//! between, the volume has an id but no Raft state, and the next start initializes again with
//! the same id (`initialize` on an empty log is idempotent in effect). A joining member records
//! the id it learned before asking to join; a crash after that leaves the same state, and it asks
//! again (adding a learner twice is harmless).

/// The decision for this start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// Initialize a new cluster with this member as its only voter, under this id.
    Initialize { cluster_id: String },
    /// Join an existing cluster through its members.
    Join,
    /// Start with the membership in the Raft state.
    Rejoin,
}

/// What the volume holds, as far as the decision cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeState {
    /// The cluster id recorded in the volume.
    pub cluster_id: Option<String>,
    /// The Raft store holds a vote or log entries or a snapshot.
    pub has_raft_state: bool,
    /// The volume's cluster id was minted by this member to initialize (ordinal 0 only).
    pub minted_here: bool,
    /// A cluster id some other member reported when asked at start-up (ordinal 0 on an empty
    /// volume asks), if any.
    pub existing_cluster: Option<String>,
}

/// Decides the plan. `new_cluster_id` is called only when a cluster id must be minted.
pub fn plan(
    ordinal: u64,
    volume: &VolumeState,
    new_cluster_id: impl FnOnce() -> String,
) -> StartPlan {
    if volume.has_raft_state {
        return StartPlan::Rejoin;
    }
    if ordinal == 0 {
        return match &volume.cluster_id {
            // Crashed between recording the id and initializing: finish with the same id.
            Some(id) if volume.minted_here => StartPlan::Initialize {
                cluster_id: id.clone(),
            },
            // kv-0 was wiped and replaced by a volume that learned its id from the cluster
            // (a re-join of a wiped kv-0): join like any other member.
            Some(_) => StartPlan::Join,
            None if volume.existing_cluster.is_some() => StartPlan::Join,
            None => StartPlan::Initialize {
                cluster_id: new_cluster_id(),
            },
        };
    }
    StartPlan::Join
}

/// A fresh random cluster id: 128 bits, hex.
pub fn mint_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(cluster_id: Option<&str>, has_raft_state: bool, minted_here: bool) -> VolumeState {
        VolumeState {
            cluster_id: cluster_id.map(str::to_string),
            has_raft_state,
            minted_here,
            existing_cluster: None,
        }
    }

    #[test]
    fn ordinal_zero_on_an_empty_volume_initializes() {
        assert_eq!(
            plan(0, &vol(None, false, false), || "c1".into()),
            StartPlan::Initialize {
                cluster_id: "c1".into()
            }
        );
    }

    #[test]
    fn higher_ordinals_on_an_empty_volume_join() {
        for ordinal in [1, 2, 7] {
            assert_eq!(
                plan(ordinal, &vol(None, false, false), || panic!(
                    "must not mint"
                )),
                StartPlan::Join
            );
        }
    }

    #[test]
    fn any_member_with_raft_state_rejoins_and_never_initializes() {
        for ordinal in [0, 1, 2] {
            assert_eq!(
                plan(ordinal, &vol(Some("c1"), true, ordinal == 0), || panic!(
                    "must not mint"
                )),
                StartPlan::Rejoin
            );
        }
    }

    #[test]
    fn half_done_starts_finish_the_same_way() {
        // kv-0 crashed after recording its minted id: initialize again with the same id.
        assert_eq!(
            plan(0, &vol(Some("c1"), false, true), || panic!("must not mint")),
            StartPlan::Initialize {
                cluster_id: "c1".into()
            }
        );
        // A joiner crashed after learning the id: ask to join again.
        assert_eq!(
            plan(2, &vol(Some("c1"), false, false), || panic!(
                "must not mint"
            )),
            StartPlan::Join
        );
        // A wiped kv-0 that learned the id from the cluster joins rather than forking a new cluster.
        assert_eq!(
            plan(0, &vol(Some("c1"), false, false), || panic!(
                "must not mint"
            )),
            StartPlan::Join
        );
    }

    #[test]
    fn a_wiped_ordinal_zero_joins_the_cluster_that_lived_on() {
        let mut v = vol(None, false, false);
        v.existing_cluster = Some("c1".into());
        assert_eq!(plan(0, &v, || panic!("must not mint")), StartPlan::Join);
    }

    #[test]
    fn minted_ids_are_distinct() {
        assert_ne!(mint_cluster_id(), mint_cluster_id());
        assert_eq!(mint_cluster_id().len(), 32);
    }
}
