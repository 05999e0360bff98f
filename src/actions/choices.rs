//! Parameters whose definition has a `value_list`, as Rust enums: a handler gets one of the
//! listed values, never a string to compare. Each variant deserialises from the listed
//! spelling (the validator hands handlers that spelling, whatever the caller's letter case),
//! and the parameter check ([`super::consistency`]) proves every listed value deserialises.

use serde::Deserialize;

/// `quarantine_device` `type`: how a device is isolated (Defender's `IsolationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IsolationType {
    /// Cut from the network except the Defender service.
    Full,
    /// Outlook, Teams and Skype keep working.
    Selective,
    /// A device Defender does not manage, contained through the other devices.
    UnManagedDevice,
}

impl IsolationType {
    /// The value Defender's API takes (the listed spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationType::Full => "Full",
            IsolationType::Selective => "Selective",
            IsolationType::UnManagedDevice => "UnManagedDevice",
        }
    }
}

/// `scan_device` `scan_type`: which antivirus scan runs (Defender's `ScanType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ScanType {
    /// A quick scan.
    Quick,
    /// A full scan.
    Full,
}

impl ScanType {
    /// The value Defender's API takes (the listed spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            ScanType::Quick => "Quick",
            ScanType::Full => "Full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listed_spellings_round_trip() {
        for t in [
            IsolationType::Full,
            IsolationType::Selective,
            IsolationType::UnManagedDevice,
        ] {
            assert_eq!(
                serde_json::from_value::<IsolationType>(json!(t.as_str())).unwrap(),
                t
            );
        }
        for t in [ScanType::Quick, ScanType::Full] {
            assert_eq!(
                serde_json::from_value::<ScanType>(json!(t.as_str())).unwrap(),
                t
            );
        }
        assert!(serde_json::from_value::<ScanType>(json!("quick")).is_err());
    }
}
