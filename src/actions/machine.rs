//! Response actions on devices (isolate, release, quarantine file, scan, restrict, investigation
//! package, cancel, tags, get status) and the wait for their outcome.

use super::HandlerFn;

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    Vec::new()
}
