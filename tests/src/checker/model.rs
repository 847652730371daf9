//! The register model and the per-key histories the search runs on.
//!
//! Linearizability is *local* (Herlihy & Wing): a history is linearizable iff its restriction
//! to each object is. Every key of kvset is an independent register, so the checker splits the
//! history by key and checks each part on its own; that turns one search over all operations
//! into many small ones, which is where most of the speed comes from.
//!
//! Each key's operations become [`KeyOp`]s: an interval (`call`, `ret`, with `ret = None` for
//! "+∞") and an [`Effect`] on a register whose state is a small integer (values are interned per
//! key; `0` is "absent", the initial state). On the way in, operations that cannot constrain
//! anything are dropped:
//!
//! * a `get` whose outcome is `info` returned nothing to check, and reads never change state;
//! * an `info` `cas` whose `expected` equals its `value` cannot change the state either;
//! * an `info` write whose value nothing could observe never needs to have happened (see
//!   [`drop_unobserved_info_writes`] for the argument);
//! * `fail` operations never reach this module (see [`crate::history::Operations`]).
//!
//! An `info` `put` or `cas` keeps its effect but has no return: the search may linearize it
//! anywhere after its call, or never. An `info` cas is modelled as the *successful* cas only:
//! linearizing it where the compare fails would leave the state as it was, which is the same as
//! not linearizing it at all, so allowing only the successful outcome loses no linearization
//! and prunes the search.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Input, Operation, Outcome, Output};

/// A register state: `0` is "absent", `n > 0` the n-th distinct value seen on the key.
pub(crate) type State = u32;

/// The absent value, which is also the initial state of every key.
pub(crate) const ABSENT: State = 0;

/// What an operation does to the register, and what it requires of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Effect {
    /// A read that returned this state. Requires it; changes nothing.
    Read(State),
    /// A put: sets the state, requires nothing.
    Write(State),
    /// A cas whose compare held: requires `expected`, sets `new`.
    Cas { expected: State, new: State },
    /// A cas whose compare ran and failed: requires a state other than `expected`.
    CasMiss { expected: State },
}

impl Effect {
    /// The state after applying this operation in `state`, or `None` if its result is
    /// impossible there.
    #[inline]
    pub(crate) fn step(self, state: State) -> Option<State> {
        match self {
            Effect::Read(v) => (state == v).then_some(state),
            Effect::Write(v) => Some(v),
            Effect::Cas { expected, new } => (state == expected).then_some(new),
            Effect::CasMiss { expected } => (state != expected).then_some(state),
        }
    }

    /// True for operations that never change the state (they may be dropped from a
    /// non-linearizable history without making it linearizable).
    pub(crate) fn is_read_only(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::CasMiss { .. })
    }
}

/// One operation of one key, ready for the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyOp {
    /// What it does.
    pub effect: Effect,
    /// Invoke time.
    pub call: u64,
    /// Completion time; `None` for `info` (it may take effect at any time after `call`, or
    /// never).
    pub ret: Option<u64>,
    /// Index of the [`Operation`] it came from, in the slice given to [`partition`].
    pub origin: usize,
}

/// All the operations on one key.
#[derive(Debug, Clone)]
pub(crate) struct KeyHistory {
    /// The key.
    pub key: String,
    /// Its operations in invoke order (ties keep input order).
    pub ops: Vec<KeyOp>,
    /// `ok` operations on the key (before dropping).
    pub ok: usize,
    /// `info` operations on the key (before dropping).
    pub info: usize,
    /// Operations dropped because they cannot constrain anything (`info` reads, `info` cas
    /// that would write the value they expect).
    pub dropped: usize,
    /// Interned values, `values[s - 1]` is the value of state `s`.
    pub values: Vec<String>,
}

impl KeyHistory {
    /// The first completed operation whose result names a value that no operation on the key
    /// ever writes: a read of it, or a successful cas that expected it. Such a history can
    /// never be linearizable, whatever the timing, and saying so needs no search.
    pub(crate) fn never_written(&self) -> Option<usize> {
        let written: HashSet<State> = self
            .ops
            .iter()
            .filter_map(|op| match op.effect {
                Effect::Write(v) | Effect::Cas { new: v, .. } => Some(v),
                _ => None,
            })
            .chain([ABSENT])
            .collect();
        self.ops.iter().position(|op| match op.effect {
            Effect::Read(v) | Effect::Cas { expected: v, .. } => {
                op.ret.is_some() && !written.contains(&v)
            }
            _ => false,
        })
    }
}

/// Interns values of one key.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, State>,
    values: Vec<String>,
}

impl Interner {
    fn id(&mut self, value: Option<&String>) -> State {
        let Some(value) = value else {
            return ABSENT;
        };
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.values.push(value.clone());
        // More than u32::MAX - 1 distinct values of one key would not fit in memory anyway.
        let id = State::try_from(self.values.len()).expect("fewer than 2^32 values per key");
        self.ids.insert(value.clone(), id);
        id
    }
}

/// Splits operations by key (keys in sorted order) and turns them into [`KeyOp`]s.
pub(crate) fn partition(ops: &[Operation]) -> Vec<KeyHistory> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    by_key
        .into_iter()
        .map(|(key, indexes)| {
            let mut interner = Interner::default();
            let mut history = KeyHistory {
                key: key.to_string(),
                ops: Vec::with_capacity(indexes.len()),
                ok: 0,
                info: 0,
                dropped: 0,
                values: Vec::new(),
            };
            for origin in indexes {
                let op = &ops[origin];
                match op.output {
                    Outcome::Ok(_) => history.ok += 1,
                    Outcome::Info => history.info += 1,
                }
                let effect = match (&op.input, &op.output) {
                    (Input::Get, Outcome::Info) => None,
                    (Input::Get, Outcome::Ok(Output::Get { value })) => {
                        Some(Effect::Read(interner.id(value.as_ref())))
                    }
                    (Input::Put { value }, _) => Some(Effect::Write(interner.id(Some(value)))),
                    // An unknown cas that would write the value it expects can never change
                    // the state: whether it happened does not matter.
                    (Input::Cas { expected, value }, Outcome::Info)
                        if expected.as_ref() == Some(value) =>
                    {
                        None
                    }
                    (
                        Input::Cas { expected, value },
                        Outcome::Ok(Output::Cas { succeeded: true }),
                    )
                    | (Input::Cas { expected, value }, Outcome::Info) => Some(Effect::Cas {
                        expected: interner.id(expected.as_ref()),
                        new: interner.id(Some(value)),
                    }),
                    (
                        Input::Cas { expected, .. },
                        Outcome::Ok(Output::Cas { succeeded: false }),
                    ) => Some(Effect::CasMiss {
                        expected: interner.id(expected.as_ref()),
                    }),
                    // An output of another function cannot come out of the history reader;
                    // for hand-built operations it is meaningless, so it constrains nothing.
                    (_, Outcome::Ok(_)) => None,
                };
                match effect {
                    Some(effect) => history.ops.push(KeyOp {
                        effect,
                        call: op.call_ns,
                        ret: match op.output {
                            // An `ok` without a return time (only possible when built by
                            // hand) is taken as returning at the end of the history.
                            Outcome::Ok(_) => Some(op.return_ns.unwrap_or(u64::MAX)),
                            Outcome::Info => None,
                        },
                        origin,
                    }),
                    None => history.dropped += 1,
                }
            }
            history.ops.sort_by_key(|op| op.call);
            history.values = interner.values;
            history.dropped += drop_unobserved_info_writes(&mut history.ops);
            history
        })
        .collect()
}

/// Drops `info` writes whose value nothing could ever observe; returns how many.
///
/// An `info` put or cas that writes `v` is dropped when no completed read returns `v`, no cas
/// (completed or `info`) expects `v`, and no failed cas could be linearized after it (none
/// returns at or after its call). Sound: in any linearization that contains such a write `X`,
/// the operation right after `X` cannot be a read (none reads `v`), a cas expecting `v`, or a
/// failed cas; so it is a put, or nothing, and removing `X` leaves a linearization. Dropping
/// one write may leave another unobserved (an `info` cas was the only one expecting its
/// value), so this runs to a fixpoint. It matters most for histories with unique values, where
/// every timed-out write that nobody read would otherwise double the search space.
fn drop_unobserved_info_writes(ops: &mut Vec<KeyOp>) -> usize {
    let before = ops.len();
    loop {
        let mut observed: HashSet<State> = HashSet::new();
        let mut last_miss_return: Option<u64> = None;
        for op in ops.iter() {
            match op.effect {
                Effect::Read(v) => {
                    observed.insert(v);
                }
                Effect::Cas { expected, .. } => {
                    observed.insert(expected);
                }
                Effect::CasMiss { .. } => {
                    let ret = op.ret.unwrap_or(u64::MAX);
                    last_miss_return = Some(last_miss_return.map_or(ret, |r| r.max(ret)));
                }
                Effect::Write(_) => {}
            }
        }
        let droppable = |op: &KeyOp| {
            let written = match op.effect {
                Effect::Write(v) | Effect::Cas { new: v, .. } => v,
                _ => return false,
            };
            op.ret.is_none()
                && !observed.contains(&written)
                && last_miss_return.is_none_or(|ret| ret < op.call)
        };
        let len = ops.len();
        ops.retain(|op| !droppable(op));
        if ops.len() == len {
            return before - ops.len();
        }
    }
}
