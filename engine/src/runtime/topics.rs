//! Topics on one worker: names to small ids, ids to subscribed slots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    members: HashMap<u32, HashSet<usize>>,
    names: HashMap<u32, Arc<str>>,
    next: u32,
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
        if !m.remove(&idx) {
            return None;
        }
        let name = self.names.get(&id).cloned();
        if m.is_empty() {
            self.members.remove(&id);
            if let Some(name) = self.names.remove(&id) {
                self.by_name.remove(&name);
            }
        }
        name
    }

    /// The slots subscribed to `name`.
    pub(crate) fn members(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        self.find(name)
            .and_then(|id| self.members.get(&id))
            .into_iter()
            .flat_map(|m| m.iter().copied())
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
        assert_eq!(t.members("a").count(), 2);
        assert_eq!(t.remove_member(a, 1).as_deref(), Some("a"));
        assert_eq!(t.remove_member(a, 1), None);
        assert_eq!(t.remove_member(a, 2).as_deref(), Some("a"));
        assert_eq!(t.members("a").count(), 0);
        assert!(t.find("a").is_none());
    }
}
