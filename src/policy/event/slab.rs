//! A loop's entries by index, each slot with a generation so that a
//! stale token or timer never reaches the slot's next owner.

/// Entries by index; freed slots are reused, with the next generation.
pub(super) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `item`; returns its index and generation.
    pub(super) fn insert(&mut self, item: T) -> (usize, u32) {
        self.len += 1;
        match self.free.pop() {
            Some(idx) => {
                let slot = &mut self.slots[idx];
                slot.1 = Some(item);
                (idx, slot.0)
            }
            None => {
                self.slots.push((0, Some(item)));
                (self.slots.len() - 1, 0)
            }
        }
    }

    /// The entry at `idx`, if it is still generation `gen`.
    pub(super) fn get_mut(&mut self, idx: usize, gen: u32) -> Option<&mut T> {
        match self.slots.get_mut(idx) {
            Some((g, Some(item))) if *g == gen => Some(item),
            _ => None,
        }
    }

    /// The entry at `idx`, whatever its generation.
    pub(super) fn get_any(&mut self, idx: usize) -> Option<&mut T> {
        self.slots.get_mut(idx).and_then(|(_, item)| item.as_mut())
    }

    /// The generation of the entry at `idx`, if there is one.
    pub(super) fn gen(&self, idx: usize) -> Option<u32> {
        match self.slots.get(idx) {
            Some((g, Some(_))) => Some(*g),
            _ => None,
        }
    }

    /// Takes the entry at `idx` out; its slot's next owner gets the next
    /// generation.
    pub(super) fn remove(&mut self, idx: usize) -> Option<T> {
        let slot = self.slots.get_mut(idx)?;
        let item = slot.1.take()?;
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(idx);
        self.len -= 1;
        Some(item)
    }

    /// The indices in use now.
    pub(super) fn indices(&self) -> Vec<usize> {
        let used = self.slots.iter().enumerate();
        used.filter(|(_, (_, item))| item.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_has_a_new_generation_and_the_old_one_finds_nothing() {
        let mut s = Slab::default();
        let (a, ga) = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let (b, gb) = s.insert("b");
        assert_eq!(a, b);
        assert_ne!(ga, gb);
        assert!(s.get_mut(a, ga).is_none());
        assert_eq!(s.get_mut(b, gb), Some(&mut "b"));
        assert_eq!(s.indices(), vec![b]);
        assert!(!s.is_empty());
    }
}
