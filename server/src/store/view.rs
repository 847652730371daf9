//! Read views over a state-machine tree.
//!
//! The KV logic reads through [`View`] and never sees sled directly, so the same code serves two
//! callers: the server's reads, which look at the committed tree, and `apply`, which looks at
//! the committed tree **plus the writes of the batch being applied** ([`Overlay`]). The overlay
//! is how a command sees the commands before it in the same batch, and a Txn operation sees the
//! operations before it, although nothing reaches sled until the whole batch is written as one
//! atomic `sled::Batch`.
//!
//! Keys here are full sled keys (namespace byte included, see `codec.rs`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::error::StoreError;

/// What a visitor tells a scan: go on, or stop here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Deliver the next pair.
    Continue,
    /// End the scan.
    Stop,
}

/// The callback of [`View::scan`]: gets each key and value, says whether to go on.
pub(crate) type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Scan, StoreError> + 'a;

/// Point and range reads of raw sled keys.
pub(crate) trait View {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `visit` with every pair in `[lo, hi)` in key order until it returns
    /// [`Scan::Stop`].
    fn scan(&self, lo: &[u8], hi: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError>;
}

impl View for sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sled::Tree::get(self, key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, lo: &[u8], hi: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        for item in self.range(lo..hi) {
            let (k, v) = item?;
            if visit(&k, &v)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }
}

/// A tree plus pending writes (`None` = delete) that shadow it.
pub(crate) struct Overlay<'t> {
    base: &'t sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Values read from `base` (the state before the batch), by key: the batch's digest and size
    /// accounting need the value each written key had before, and most were read already by the
    /// command that wrote them; [`Overlay::original`] answers those from here instead of a
    /// second B-tree lookup and copy.
    originals: RefCell<HashMap<Vec<u8>, Option<sled::IVec>>>,
}

impl<'t> Overlay<'t> {
    /// An overlay with no pending writes.
    pub(crate) fn new(base: &'t sled::Tree) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
            originals: RefCell::default(),
        }
    }

    /// The value `key` had in the base tree, before any pending write.
    pub(crate) fn original(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(known) = self.originals.borrow().get(key) {
            return Ok(known.clone());
        }
        Ok(self.base.get(key)?)
    }

    fn read_base(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.base.get(key)?;
        let copy = value.as_deref().map(<[u8]>::to_vec);
        self.originals.borrow_mut().insert(key.to_vec(), value);
        Ok(copy)
    }

    /// Stages `key = value`.
    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Stages the removal of `key`.
    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// The pending writes in key order (`None` = delete).
    pub(crate) fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        self.writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The pending writes as one atomic sled batch.
    pub(crate) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

impl View for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.read_base(key),
        }
    }

    fn scan(&self, lo: &[u8], hi: &[u8], visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        // Merge two sorted streams; on equal keys the pending write wins.
        let mut base = self.base.range(lo..hi);
        let mut pending = self
            .writes
            .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)));
        let mut b = base.next().transpose()?;
        let mut p = pending.next();
        loop {
            let take_base = match (&b, &p) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((bk, _)), Some((pk, _))) => bk.as_ref() < pk.as_slice(),
            };
            let flow = if take_base {
                let flow = match &b {
                    Some((k, v)) => visit(k, v)?,
                    None => Scan::Continue,
                };
                b = base.next().transpose()?;
                flow
            } else {
                let flow = match p {
                    Some((k, Some(v))) => visit(k, v)?,
                    _ => Scan::Continue, // a pending delete hides the key
                };
                if let (Some((bk, _)), Some((pk, _))) = (&b, p) {
                    if bk.as_ref() == pk.as_slice() {
                        b = base.next().transpose()?;
                    }
                }
                p = pending.next();
                flow
            };
            if flow == Scan::Stop {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(view: &dyn View, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        view.scan(lo, hi, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(Scan::Continue)
        })
        .unwrap();
        out
    }

    #[test]
    fn overlay_shadows_inserts_and_deletes_in_order() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for k in [b"a", b"c", b"e", b"g"] {
            tree.insert(k, k.to_vec()).unwrap();
        }
        let mut ov = Overlay::new(&tree);
        ov.put(b"b".to_vec(), b"B".to_vec());
        ov.put(b"c".to_vec(), b"C".to_vec());
        ov.remove(b"e".to_vec());
        ov.put(b"h".to_vec(), b"H".to_vec());
        ov.remove(b"zz".to_vec());

        let got = collect(&ov, b"a", b"z");
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            [("a", "a"), ("b", "B"), ("c", "C"), ("g", "g"), ("h", "H")]
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
        assert_eq!(got, want);
        assert_eq!(
            collect(&ov, b"c", b"g").len(),
            1,
            "only c: e is deleted, g excluded"
        );
        assert_eq!(View::get(&ov, b"e").unwrap(), None);
        assert_eq!(View::get(&ov, b"g").unwrap(), Some(b"g".to_vec()));

        // Stop is honoured.
        let mut seen = 0;
        ov.scan(b"a", b"z", &mut |_, _| {
            seen += 1;
            Ok(if seen == 2 {
                Scan::Stop
            } else {
                Scan::Continue
            })
        })
        .unwrap();
        assert_eq!(seen, 2);

        tree.apply_batch(ov.into_batch()).unwrap();
        assert_eq!(collect(&tree, b"a", b"z"), want);
    }
}
