//! Topics on one worker: names to small ids, ids to subscribed slots.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    members: HashMap<u32, Members>,
    names: HashMap<u32, Arc<str>>,
    next: u32,
}

/// One topic's subscribed slots: a list that a publish copies in one go (walking a
/// hash set cost about 37 instructions a receiver at 1,000 receivers), and each
/// slot's place in it, so that leaving is O(1) (`swap_remove`). Slot indices of one
/// worker fit in 32 bits, so a place costs 8 bytes beside the list's 8.
#[derive(Debug, Default)]
struct Members {
    list: Vec<usize>,
    at: HashMap<u32, u32>,
}

impl Members {
    fn insert(&mut self, idx: usize) -> bool {
        let next = self.list.len() as u32;
        match self.at.entry(idx as u32) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(next);
                self.list.push(idx);
                true
            }
        }
    }

    fn remove(&mut self, idx: usize) -> bool {
        let Some(p) = self.at.remove(&(idx as u32)) else {
            return false;
        };
        let p = p as usize;
        self.list.swap_remove(p);
        if let Some(&moved) = self.list.get(p) {
            self.at.insert(moved as u32, p as u32);
        }
        true
    }
}

impl Topics {
    /// The id of `name`, made on first use.
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        let name: Arc<str> = Arc::from(name);
        self.by_name.insert(name.clone(), id);
        self.names.insert(id, name);
        id
    }

    /// The id of `name`, if it has one.
    pub(crate) fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Adds `idx` to topic `id`; false if it was a member already.
    pub(crate) fn add_member(&mut self, id: u32, idx: usize) -> bool {
        self.members.entry(id).or_default().insert(idx)
    }

    /// Removes `idx` from topic `id`; a topic left empty is forgotten. Returns the
    /// topic's name if `idx` was a member.
    pub(crate) fn remove_member(&mut self, id: u32, idx: usize) -> Option<Arc<str>> {
        let m = self.members.get_mut(&id)?;
        if !m.remove(idx) {
            return None;
        }
        let name = self.names.get(&id).cloned();
        if m.list.is_empty() {
            self.members.remove(&id);
            if let Some(name) = self.names.remove(&id) {
                self.by_name.remove(&name);
            }
        }
        name
    }

    /// The slots subscribed to `name`, in no particular order.
    pub(crate) fn members(&self, name: &str) -> &[usize] {
        self.find(name)
            .and_then(|id| self.members.get(&id))
            .map_or(&[], |m| &m.list[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_topics_are_forgotten() {
        let mut t = Topics::default();
        let a = t.id("a");
        assert!(t.add_member(a, 1));
        assert!(!t.add_member(a, 1));
        assert!(t.add_member(a, 2));
        assert_eq!(t.members("a").len(), 2);
        assert_eq!(t.remove_member(a, 1).as_deref(), Some("a"));
        assert_eq!(t.remove_member(a, 1), None);
        assert_eq!(t.remove_member(a, 2).as_deref(), Some("a"));
        assert_eq!(t.members("a").len(), 0);
        assert!(t.find("a").is_none());
    }

    /// Members join and leave in any order: the list and each member's place in it
    /// agree with a plain set after every step.
    #[test]
    fn members_follow_a_set_through_joins_and_leaves() {
        let mut t = Topics::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut forgotten = 0;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // few slots, so that the topic empties now and then
            let idx = (x % 6) as usize;
            if x & (1 << 40) == 0 {
                let a = t.id("a");
                assert_eq!(t.add_member(a, idx), model.insert(idx));
            } else if let Some(a) = t.find("a") {
                let gone = t.remove_member(a, idx).is_some();
                assert_eq!(gone, model.remove(&idx));
                if model.is_empty() {
                    // forgotten with its last member
                    assert!(t.find("a").is_none());
                    forgotten += 1;
                }
            } else {
                assert!(model.is_empty());
            }
            let mut got: Vec<usize> = t.members("a").to_vec();
            got.sort_unstable();
            assert_eq!(got, model.iter().copied().collect::<Vec<_>>());
            if let Some(a) = t.find("a") {
                let m = &t.members[&a];
                assert_eq!(m.at.len(), m.list.len());
                for (p, &idx) in m.list.iter().enumerate() {
                    assert_eq!(m.at[&(idx as u32)] as usize, p);
                }
            }
        }
        assert!(forgotten > 0);
    }
}
