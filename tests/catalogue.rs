//! Every action of Splunk SOAR's Microsoft Defender for Endpoint app has a counterpart here:
//! an action with its identifier, or an alias its definition names, so a migrated playbook
//! finds every action it calls; and every command of XSOAR's integration that is not
//! deprecated has an action that does the same.

use std::collections::BTreeSet;

use defender_soar::actions::definitions;
use defender_soar::actions::manifest::manifest;

#[test]
fn every_splunk_action_has_a_counterpart() {
    // What a SOAR platform sees: the manifest's action identifiers (aliases included).
    let manifest = manifest();
    let ours: BTreeSet<&str> = manifest["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identifier"].as_str().unwrap())
        .collect();
    let splunk: Vec<&str> = include_str!("fixtures/splunk_action_ids.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(splunk.len(), 58, "Splunk's app has 58 actions");
    let missing: Vec<&str> = splunk
        .iter()
        .copied()
        .filter(|id| !ours.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "Splunk actions without a counterpart in the manifest: {missing:?}"
    );
}

#[test]
fn every_current_xsoar_command_has_an_action() {
    let ours: BTreeSet<&str> = definitions().iter().map(|d| d.id.as_str()).collect();
    let mapped: Vec<(&str, &str)> = include_str!("fixtures/xsoar_commands.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(mapped.len() >= 50, "{}", mapped.len());
    for (command, action) in mapped {
        assert!(
            ours.contains(action),
            "{command} maps to {action}, which does not exist"
        );
    }
    // The templates XSOAR runs as commands are shipped.
    let templates: Vec<&str> = defender_soar::actions::hunting::templates::templates()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for t in [
        "lateral_movement",
        "persistence",
        "file_origin",
        "process_details",
        "network_connections",
        "privilege_escalation",
        "tampering",
        "cover_up",
    ] {
        assert!(templates.contains(&t), "{t}");
    }
}
