//! The positioned YAML reader every user-written file goes through (stack.yaml, drill files).
//!
//! A user fixing a file wants every problem in one go, each as `FILE:LINE:COL: message`.
//! serde_yaml stops at the first error and knows no positions of values, so files are read in
//! steps instead of one serde pass:
//!
//! 1. [`read`] turns saphyr-parser's events into a small tree of [`Node`]s that keeps every
//!    node's position (the only place the YAML crate is used for reading);
//! 2. the file's own module walks that tree into a raw model with [`Check`]'s readers (and
//!    the [`raw_struct!`](crate::raw_struct) macro): shape and types only, unknown keys rejected
//!    with a "did you mean";
//! 3. that module validates the raw model into its typed one, reporting into the same
//!    [`Check`], so the problems of all steps come out together, sorted by position.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

/// A 1-based position in a file; `0:0` only for problems that have no place (unreadable file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    /// Counted in characters, as editors do.
    pub column: usize,
}

impl Pos {
    /// `FILE:LINE:COL` for a mistake at `at` in `file`, or just `FILE` when it has no place.
    pub fn place(file: &std::path::Path, at: Option<Pos>) -> String {
        match at {
            Some(at) => format!("{}:{}:{}", file.display(), at.line, at.column),
            None => file.display().to_string(),
        }
    }
}

impl From<&Marker> for Pos {
    fn from(m: &Marker) -> Pos {
        Pos { line: m.line(), column: m.col() + 1 } // saphyr's lines are 1-based, its columns 0-based
    }
}

/// A YAML node and where it starts.
pub struct Node {
    pub at: Pos,
    pub value: Value,
}

pub enum Value {
    /// `plain` is false for quoted and block scalars, which are strings whatever they hold.
    Scalar {
        text: String,
        plain: bool,
    },
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        let nulls = ["", "~", "null", "Null", "NULL"];
        matches!(&self.value, Value::Scalar { text, plain: true } if nulls.contains(&text.as_str()))
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// The node as a message shows it, long values cut short.
    pub fn describe(&self) -> String {
        let cut = |text: &str| match text.char_indices().nth(40) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text.to_string(),
        };
        match &self.value {
            Value::Scalar { text, plain: true } => format!("`{}`", cut(text)),
            Value::Scalar { text, plain: false } => format!("`\"{}\"`", cut(text)),
            Value::List(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// What kind of file is being read, for the messages about the document as a whole.
#[derive(Clone, Copy, Debug)]
pub struct Doc<'a> {
    /// `stack file`, `drill file`.
    pub noun: &'a str,
    /// What an empty file lacks, e.g. "a `services:` section".
    pub needs: &'a str,
}

/// No user file nests this deep; the cap keeps junk input from exhausting the stack when the
/// tree is dropped (which recurses).
const MAX_DEPTH: usize = 32;

/// The document's root node, or `None` after reporting why there is none worth reading.
pub fn read(text: &str, doc: Doc, c: &mut Check) -> Option<Node> {
    enum Open {
        List(Pos, Vec<Node>),
        Map(Pos, Vec<(Node, Node)>, Option<Node>),
    }
    let noun = doc.noun;
    let mut open: Vec<Open> = Vec::new();
    let mut root = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(event) => event,
            Err(e) => return c.fail(e.marker().into(), format!("invalid YAML: {}", e.info())),
        };
        let at = Pos::from(&span.start);
        let node = match event {
            Event::DocumentStart(_) if root.is_some() => {
                return c.fail(at, format!("a second YAML document starts here; a {noun} holds exactly one"));
            }
            Event::Alias(_)
            | Event::Scalar(_, _, 1.., _)
            | Event::SequenceStart(1.., _)
            | Event::MappingStart(1.., _) => {
                return c
                    .fail(at, "anchors and aliases (`&name`, `*name`) are not supported; write the value out".into());
            }
            // A tag could turn `8080` into a string behind the reader's back; nobody needs one here.
            Event::Scalar(.., Some(_)) | Event::SequenceStart(_, Some(_)) | Event::MappingStart(_, Some(_)) => {
                return c.fail(at, "YAML tags (`!!str`, `!name`) are not supported; remove it".into());
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if open.len() >= MAX_DEPTH => {
                return c.fail(at, format!("nested more than {MAX_DEPTH} levels deep; this is not a {noun}"));
            }
            Event::SequenceStart(..) => {
                open.push(Open::List(at, Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                open.push(Open::Map(at, Vec::new(), None));
                continue;
            }
            Event::Scalar(text, style, ..) => {
                Node { at, value: Value::Scalar { text: text.into_owned(), plain: style == ScalarStyle::Plain } }
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(Open::List(at, items)) => Node { at, value: Value::List(items) },
                Some(Open::Map(at, entries, _)) => Node { at, value: Value::Map(entries) },
                None => continue, // the parser balances ends with starts
            },
            _ => continue,
        };
        match open.last_mut() {
            None => root = Some(node),
            Some(Open::List(_, items)) => items.push(node),
            Some(Open::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    if root.is_none() {
        c.report(Pos { line: 1, column: 1 }, format!("the {noun} is empty; it needs at least {}", doc.needs));
    }
    root
}

/// A value and where it was written.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    pub at: Pos,
    pub v: T,
}

pub type Text = Option<Sp<String>>;
pub type Int = Option<Sp<i64>>;
pub type Float = Option<Sp<f64>>;
pub type Bool = Option<Sp<bool>>;
pub type List = Option<Sp<Vec<Sp<String>>>>;

/// A raw section: read from a mapping node at `path`, reporting what does not fit.
pub trait Raw: Default {
    fn read(c: &mut Check, node: Option<&Node>, path: &str) -> Self;
}

/// Declares a raw struct and its reader, as `#[derive(Deserialize)]` with
/// `#[serde(deny_unknown_fields)]` would: the field names are the keys (a field named `r#for`
/// is the key `for`), each is read by the [`Check`] method named after `=`, and any other key
/// is reported with a suggestion.
#[macro_export]
macro_rules! raw_struct {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty = $read:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Default)]
        struct $name { $($field: $ty),* }

        impl $crate::plumbing::yaml::Raw for $name {
            fn read(
                c: &mut $crate::plumbing::yaml::Check,
                node: Option<&$crate::plumbing::yaml::Node>,
                path: &str,
            ) -> $name {
                use $crate::plumbing::yaml::key_of as key;
                let f = c.fields(node, path, &[$(key(stringify!($field))),*]);
                $name { $($field: c.$read(
                    f.get(key(stringify!($field))),
                    &$crate::plumbing::yaml::child(path, key(stringify!($field))),
                )),* }
            }
        }
    };
}

/// The key a raw field reads: its name without a raw identifier's `r#`.
pub fn key_of(field: &'static str) -> &'static str {
    field.trim_start_matches("r#")
}

/// `parent.key`, or `key` at the top level.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The entries of a mapping whose keys were checked; a null value counts as not given.
pub struct Fields<'a>(pub Vec<(Sp<String>, &'a Node)>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.0.iter().find(|(k, v)| k.v == key && !v.is_null()).map(|(_, v)| *v)
    }

    /// Where `key` is written, given or null.
    pub fn key_at(&self, key: &str) -> Option<Pos> {
        self.0.iter().find(|(k, _)| k.v == key).map(|(k, _)| k.at)
    }
}

/// One problem; line and column are 1-based, or 0 when the file could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending key or value starts.
    pub line: usize,
    /// Counted in characters, as editors do.
    pub column: usize,
    /// Lower case, names the thing in backticks and says what to do.
    pub message: String,
}

/// Everything wrong with a file; `Display` prints one `FILE:LINE:COL: message` per line.
#[derive(Clone, Debug, PartialEq)]
pub struct FileError {
    /// The file's path as given.
    pub file: PathBuf,
    /// Sorted by position.
    pub problems: Vec<Problem>,
}

impl FileError {
    /// The file could not be read at all: one problem, with no position.
    pub fn unreadable(file: PathBuf, message: String) -> FileError {
        FileError { file, problems: vec![Problem { line: 0, column: 0, message }] }
    }

    /// Whether the file could not be read at all (as opposed to read and found wrong).
    pub fn is_unreadable(&self) -> bool {
        self.problems.iter().any(|p| p.line == 0)
    }

    /// The closing line under the problems, as every command prints it.
    pub fn summary(&self) -> String {
        let n = self.problems.len();
        format!(
            "`{}` is invalid ({n} problem{}); fix it and run again",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            match p.line {
                0 => write!(f, "{sep}{}: {}", self.file.display(), p.message)?,
                _ => write!(f, "{sep}{}:{}:{}: {}", self.file.display(), p.line, p.column, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// How an unknown key is reported: a file format may keep the wording its users know.
pub type UnknownKey = fn(path: &str, key: &str, known: &[&str], near: Option<&str>) -> String;

/// "unknown key `restrat` in `services.order`; did you mean `restart`?"
fn unknown_key(path: &str, key: &str, known: &[&str], near: Option<&str>) -> String {
    let hint = match near {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("expected one of: {}", known.join(", ")),
    };
    format!("unknown key `{key}` {}; {hint}", place(path))
}

/// Collects problems while a file is read and validated.
pub struct Check {
    pub problems: Vec<Problem>,
    unknown_key: UnknownKey,
}

impl Default for Check {
    fn default() -> Check {
        Check { problems: Vec::new(), unknown_key }
    }
}

impl Check {
    /// A check that words unknown keys its own way.
    pub fn with_unknown_key(unknown_key: UnknownKey) -> Check {
        Check { problems: Vec::new(), unknown_key }
    }

    pub fn report(&mut self, at: Pos, message: impl Into<String>) {
        // One problem per line whatever the file holds: escape control characters from quoted values.
        let mut line = String::new();
        for ch in message.into().chars() {
            if ch.is_control() {
                line.extend(ch.escape_default());
            } else {
                line.push(ch);
            }
        }
        self.problems.push(Problem { line: at.line, column: at.column, message: line });
    }

    pub fn fail<T>(&mut self, at: Pos, message: String) -> Option<T> {
        self.report(at, message);
        None
    }

    /// The problems as an error for `file`, sorted by position; `Ok` when there are none.
    pub fn finish(mut self, file: PathBuf) -> Result<(), FileError> {
        if self.problems.is_empty() {
            return Ok(());
        }
        // Stable, so problems at one spot keep the order they were found in.
        self.problems.sort_by_key(|p| (p.line, p.column));
        Err(FileError { file, problems: self.problems })
    }

    /// A mapping's entries in file order, keys checked to be unique single values.
    pub fn entries<'a>(&mut self, node: Option<&'a Node>, path: &str) -> Vec<(Sp<String>, &'a Node)> {
        let pairs = match node {
            Some(Node { value: Value::Map(pairs), .. }) => pairs,
            Some(n) if !n.is_null() => {
                self.report(n.at, format!("`{path}` must be a mapping (`{{}}` for none), not {}", n.describe()));
                return Vec::new();
            }
            _ => return Vec::new(),
        };
        let mut out: Vec<(Sp<String>, &Node)> = Vec::new();
        for (key, value) in pairs {
            let place = place(path);
            match &key.value {
                Value::Scalar { text, .. } if out.iter().any(|(k, _)| k.v == *text) => {
                    self.report(key.at, format!("duplicate key `{text}` {place}; keep one"))
                }
                Value::Scalar { text, .. } => out.push((Sp { at: key.at, v: text.clone() }, value)),
                _ => self.report(key.at, format!("keys {place} must be single values, not {}", key.describe())),
            }
        }
        out
    }

    /// Like [`Check::entries`], reporting keys not in `known`.
    pub fn fields<'a>(&mut self, node: Option<&'a Node>, path: &str, known: &[&str]) -> Fields<'a> {
        let mut entries = self.entries(node, path);
        entries.retain(|(key, _)| {
            if known.contains(&key.v.as_str()) {
                return true;
            }
            let near = did_you_mean(&key.v, known.iter().copied());
            let message = (self.unknown_key)(path, &key.v, known, near);
            self.report(key.at, message);
            false
        });
        Fields(entries)
    }

    /// A single value as text: strings, and numbers or booleans where a string is wanted.
    pub fn text(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<String>> {
        let node = node?;
        match &node.value {
            Value::Scalar { text, .. } => Some(Sp { at: node.at, v: text.clone() }),
            _ => self.fail(node.at, format!("`{path}` must be a single value, not {}", node.describe())),
        }
    }

    /// A whole number; ranges are checked in validation.
    pub fn int(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<i64>> {
        let node = node?;
        if let Value::Scalar { text, plain: true } = &node.value {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return match text.parse() {
                    Ok(n) => Some(Sp { at: node.at, v: n }),
                    Err(_) => self.fail(node.at, format!("`{path}` is out of range: {text}")),
                };
            }
        }
        self.fail(node.at, format!("`{path}` must be a whole number, not {}", node.describe()))
    }

    /// A number, whole or not; ranges (and infinities) are checked in validation.
    pub fn float(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<f64>> {
        let node = node?;
        if let Value::Scalar { text, plain: true } = &node.value {
            // Digits only: Rust would also read `inf` and `NaN`, which nobody means by a number.
            let numeric = text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE_".contains(&b));
            if let (true, Ok(n)) = (numeric && text.bytes().any(|b| b.is_ascii_digit()), text.parse()) {
                return Some(Sp { at: node.at, v: n });
            }
        }
        self.fail(node.at, format!("`{path}` must be a number, not {}", node.describe()))
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<bool>> {
        let node = node?;
        if let Value::Scalar { text, plain: true } = &node.value {
            match text.as_str() {
                "true" | "True" | "TRUE" => return Some(Sp { at: node.at, v: true }),
                "false" | "False" | "FALSE" => return Some(Sp { at: node.at, v: false }),
                _ => {}
            }
        }
        self.fail(node.at, format!("`{path}` must be true or false, not {}", node.describe()))
    }

    /// Another raw section.
    pub fn nested<T: Raw>(&mut self, node: Option<&Node>, path: &str) -> T {
        T::read(self, node, path)
    }

    /// A section that is absent unless given, and where it was given.
    pub fn optional<T: Raw>(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<T>> {
        node.map(|n| Sp { at: n.at, v: T::read(self, Some(n), path) })
    }

    /// Environment variables; numbers and booleans are taken as written, a null as empty. Each
    /// value is kept with where its name is written, for what only the caller can judge.
    pub fn env(&mut self, node: Option<&Node>, path: &str) -> BTreeMap<String, Sp<String>> {
        let mut env = BTreeMap::new();
        for (key, value) in self.entries(node, path) {
            // A process environment cannot hold such a name: `A=B: x` would arrive as `A` set
            // to `B=x`, and a NUL byte cuts it short.
            if key.v.is_empty() || key.v.contains(['=', '\0']) {
                let why = "an environment name is not empty and holds no `=` or NUL";
                self.report(key.at, format!("`{path}` has the name `{}`; {why}", key.v));
                continue;
            }
            let value = match value.is_null() {
                true => Some(String::new()),
                false => self.text(Some(value), &format!("{path}.{}", key.v)).map(|v| v.v),
            };
            if let Some(value) = value {
                env.insert(key.v, Sp { at: key.at, v: value });
            }
        }
        env
    }

    /// A list of single values.
    pub fn list(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<Vec<Sp<String>>>> {
        let node = node?;
        let Value::List(items) = &node.value else {
            return self.fail(node.at, format!("`{path}` must be a list like [a, b], not {}", node.describe()));
        };
        let items = items.iter().filter_map(|item| self.text(Some(item), &format!("{path}[]"))).collect();
        Some(Sp { at: node.at, v: items })
    }

    /// One single value or a list of them (`item: sku-1` or `item: [sku-1, sku-2]`).
    pub fn one_or_many(&mut self, node: Option<&Node>, path: &str) -> Option<Sp<Vec<Sp<String>>>> {
        let node = node?;
        match &node.value {
            Value::List(_) => self.list(Some(node), path),
            _ => self.text(Some(node), path).map(|one| Sp { at: node.at, v: vec![one] }),
        }
    }
}

/// Where a key sits, for messages.
pub fn place(path: &str) -> String {
    if path.is_empty() {
        "at the top level".into()
    } else {
        format!("in `{path}`")
    }
}

/// The closest candidate within two edits, for "did you mean".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > 64 {
        return None; // no name is that long, and the distance is quadratic
    }
    (candidates.into_iter())
        .map(|cand| (edit_distance(word, cand), cand))
        .filter(|&(d, _)| d <= 2 && d < word.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, cand)| cand)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = cost.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> (Option<Node>, Check) {
        let mut c = Check::default();
        let doc = Doc { noun: "test file", needs: "a `name:`" };
        (read(text, doc, &mut c), c)
    }

    #[test]
    fn nodes_keep_their_one_based_positions() {
        let (node, c) = root("a:\n  b: [1, x]\n");
        assert!(c.problems.is_empty());
        let node = node.unwrap();
        let Value::Map(entries) = &node.value else { panic!("not a map") };
        let (key, value) = &entries[0];
        assert_eq!((key.at, value.at), (Pos { line: 1, column: 1 }, Pos { line: 2, column: 3 }));
    }

    #[test]
    fn an_empty_document_names_the_kind_of_file() {
        let (node, c) = root("");
        assert!(node.is_none());
        assert_eq!(c.problems[0].message, "the test file is empty; it needs at least a `name:`");
    }

    #[test]
    fn numbers_and_booleans_are_read_from_plain_scalars_only() {
        let (node, mut c) = root("[1.5, '2', inf, true, 'true']");
        let Some(Node { value: Value::List(items), .. }) = node else { panic!("not a list") };
        assert_eq!(c.float(Some(&items[0]), "x").map(|f| f.v), Some(1.5));
        assert!(c.float(Some(&items[1]), "x").is_none());
        assert!(c.float(Some(&items[2]), "x").is_none());
        assert_eq!(c.boolean(Some(&items[3]), "x").map(|b| b.v), Some(true));
        assert!(c.boolean(Some(&items[4]), "x").is_none());
        assert_eq!(c.problems.len(), 3);
    }

    #[test]
    fn suggestions_are_within_two_edits() {
        assert_eq!(did_you_mean("restrat", ["restart", "replicas"]), Some("restart"));
        assert_eq!(did_you_mean("shipping", ["order", "payment"]), None);
    }
}
