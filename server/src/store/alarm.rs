//! The replicated alarm table: which members raised which alarm (today only `NOSPACE`).
//!
//! Alarms are state-machine state, changed only by `LogCommand::alarm` entries, so every member
//! applies the same changes in the same order and agrees on them without talking about it — the
//! leader's write check and a follower's `Status` see the same table once they applied the same
//! index. The table rides along wherever the state goes:
//!
//! - in the live tree under the metadata key `m/alarms` (postcard of a list of [`Alarm`]s, absent
//!   when empty), written in the same sled batch as the entry that changed it;
//! - in snapshots (format 2 adds the list; a snapshot with no alarm is still written as format 1,
//!   so a member that never saw an alarm stays readable by an older build), so a member that
//!   restarts or installs a snapshot knows the alarms at once.
//!
//! Applying is deterministic and idempotent: raising an alarm that is raised refreshes nothing
//! (the first usage and quota recorded stay, so replicas keep identical bytes), clearing one that
//! is not raised is a no-op. Neither bumps the key-value revision: alarms are not key-value data.

use kvset_proto::v1::alarm_request::AlarmAction;
use kvset_proto::v1::{AlarmMember, AlarmRequest, AlarmType};
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;

/// The key of the alarm table in a state-machine tree (inside the metadata namespace `m`).
pub(crate) const ALARMS_KEY: &[u8] = b"m/alarms";

/// One raised alarm as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// `AlarmType` as its proto number.
    pub alarm: i32,
    /// The member's name when it raised it.
    pub member_name: String,
    /// Its store usage when it raised it, bytes.
    pub usage_bytes: u64,
    /// Its quota when it raised it, bytes.
    pub quota_bytes: u64,
}

impl Alarm {
    /// The public form.
    pub(crate) fn to_proto(&self) -> AlarmMember {
        AlarmMember {
            member_id: self.member_id,
            alarm: self.alarm,
            member_name: self.member_name.clone(),
            usage_bytes: self.usage_bytes,
            quota_bytes: self.quota_bytes,
        }
    }
}

/// Applies an alarm command to `alarms` (kept sorted by member, then kind). Returns whether the
/// table changed. An action this build does not know, or GET (never proposed), is an error:
/// skipping it could make replicas disagree with a newer build that applied it.
pub(crate) fn apply(
    alarms: &mut Vec<Alarm>,
    log_index: u64,
    req: &AlarmRequest,
) -> Result<bool, StoreError> {
    let action = AlarmAction::try_from(req.action).ok();
    match action {
        Some(AlarmAction::Activate) => {
            if req.alarm == AlarmType::None as i32 || AlarmType::try_from(req.alarm).is_err() {
                return Err(StoreError::UnappliableCommand {
                    log_index,
                    detail: "raises an alarm of no kind this kvset-server knows",
                });
            }
            if alarms
                .iter()
                .any(|a| a.member_id == req.member_id && a.alarm == req.alarm)
            {
                return Ok(false);
            }
            alarms.push(Alarm {
                member_id: req.member_id,
                alarm: req.alarm,
                member_name: req.member_name.clone(),
                usage_bytes: req.usage_bytes,
                quota_bytes: req.quota_bytes,
            });
            alarms.sort_by_key(|a| (a.member_id, a.alarm));
            Ok(true)
        }
        Some(AlarmAction::Deactivate) => {
            let before = alarms.len();
            alarms.retain(|a| {
                let member = req.all_members || a.member_id == req.member_id;
                let kind = req.alarm == AlarmType::None as i32 || a.alarm == req.alarm;
                !(member && kind)
            });
            Ok(alarms.len() != before)
        }
        Some(AlarmAction::Get) | None => Err(StoreError::UnappliableCommand {
            log_index,
            detail: "holds an alarm command with an action that changes nothing or is unknown \
                     (written by a newer version?); run the same kvset-server version on every \
                     member",
        }),
    }
}

/// The stored form of the table: `None` (no record) when it is empty.
pub(crate) fn encode(alarms: &[Alarm]) -> Result<Option<Vec<u8>>, StoreError> {
    if alarms.is_empty() {
        return Ok(None);
    }
    codec::encode("alarm table", &alarms.to_vec()).map(Some)
}

/// Reads the table from its stored form.
pub(crate) fn decode(bytes: Option<&[u8]>) -> Result<Vec<Alarm>, StoreError> {
    match bytes {
        None => Ok(Vec::new()),
        Some(b) => codec::decode("alarm table", b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise(member: u64) -> AlarmRequest {
        AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: member,
            alarm: AlarmType::Nospace as i32,
            member_name: format!("kv-{member}"),
            usage_bytes: 100 + member,
            quota_bytes: 90,
            all_members: false,
        }
    }

    #[test]
    fn raise_is_idempotent_and_disarm_clears() {
        let mut alarms = Vec::new();
        assert!(apply(&mut alarms, 1, &raise(2)).unwrap());
        assert!(apply(&mut alarms, 2, &raise(1)).unwrap());
        let mut again = raise(2);
        again.usage_bytes = 999;
        assert!(!apply(&mut alarms, 3, &again).unwrap());
        assert_eq!(
            alarms.iter().map(|a| a.member_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(alarms[1].usage_bytes, 102, "the first record stays");

        let one = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 1,
            ..Default::default()
        };
        assert!(apply(&mut alarms, 4, &one).unwrap());
        assert!(!apply(&mut alarms, 5, &one).unwrap());
        let all = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            all_members: true,
            ..Default::default()
        };
        assert!(apply(&mut alarms, 6, &all).unwrap());
        assert!(alarms.is_empty());
        assert_eq!(encode(&alarms).unwrap(), None);
    }

    #[test]
    fn unknown_actions_and_kinds_are_errors() {
        let mut alarms = Vec::new();
        let get = AlarmRequest::default();
        assert!(apply(&mut alarms, 1, &get).is_err());
        let mut bad = raise(1);
        bad.alarm = 77;
        assert!(apply(&mut alarms, 1, &bad).is_err());
        let mut none = raise(1);
        none.alarm = AlarmType::None as i32;
        assert!(apply(&mut alarms, 1, &none).is_err());
    }

    #[test]
    fn table_round_trips() {
        let mut alarms = Vec::new();
        apply(&mut alarms, 1, &raise(3)).unwrap();
        let bytes = encode(&alarms).unwrap().unwrap();
        assert_eq!(decode(Some(&bytes)).unwrap(), alarms);
        assert_eq!(decode(None).unwrap(), Vec::new());
    }
}
