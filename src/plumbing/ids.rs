//! Prefixed, sortable identifiers (`ord_01J…`): a ULID keeps creation order, the prefix says what the id names.

/// A new id such as `ord_01JD3Q…`; ULIDs sort by creation time, so ids do too.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// An order id as given on a command line (`ord_` and letters and digits): it goes into a
/// request's path, so anything else (`../healthz`, `#`, `?`) would ask for something else.
pub fn parse_order_id(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("ord_").unwrap_or_default();
    if rest.is_empty() || rest.len() > 60 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("`{s}` is not an order id; they look like ord_01M8HBTN4GP65G3REVBBYB4F68"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_order_id_is_ord_and_letters_and_digits_only() {
        assert!(super::parse_order_id("ord_01M8HBTN4GP65G3REVBBYB4F68").is_ok());
        for bad in ["", "ord_", "../../healthz", "ord_X#junk", "ord_../x", "ord_a?b", "01M8HBTN4GP65G3REVBBYB4F68"] {
            assert!(super::parse_order_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = super::new("ord");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new("ord");
        assert!(a.starts_with("ord_") && a.len() == 30, "{a}");
        assert!(a < b);
    }
}
