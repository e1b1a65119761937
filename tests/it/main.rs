//! Integration tests: the real `shop` binary, real services on port 0, real SQLite files in a
//! temp dir per test, HTTP over loopback.

mod api;
mod chaos;
mod dns;
mod drills;
mod drive;
mod export;
mod hostile;
mod load;
mod logs;
mod props;
mod registry;
mod saga;
mod smoke;
mod stack;
mod support;
mod tools;
mod top;
