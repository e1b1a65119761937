//! Prefixed, sortable identifiers (`ord_01J…`): a ULID keeps creation order, the prefix says what the id names.

/// A new id such as `ord_01JD3Q…`; ULIDs sort by creation time, so ids do too.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = super::new("ord");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new("ord");
        assert!(a.starts_with("ord_") && a.len() == 30, "{a}");
        assert!(a < b);
    }
}
