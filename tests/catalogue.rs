//! Every action of Splunk SOAR's Microsoft Defender for Endpoint app has a counterpart here:
//! an action with its identifier, or an alias its definition names, so a migrated playbook
//! finds every action it calls; and every command of XSOAR's integration that is not
//! deprecated has an action that does the same.

use std::collections::BTreeSet;

use defender_soar::actions::definitions;

/// Identifiers whose counterpart is not an action (with what stands in for it); none now
/// that `on_poll` is an action.
const NOT_ACTIONS: &[(&str, &str)] = &[];

#[test]
fn every_splunk_action_has_a_counterpart() {
    let ours: BTreeSet<&str> = definitions()
        .iter()
        .flat_map(|d| std::iter::once(d.id.as_str()).chain(d.aliases.iter().map(|a| a.id.as_str())))
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
        .filter(|id| !NOT_ACTIONS.iter().any(|(n, _)| n == id))
        .collect();
    assert!(
        missing.is_empty(),
        "Splunk actions without a counterpart: {missing:?}"
    );
    // An exception that gained an action is no longer an exception.
    for (id, _) in NOT_ACTIONS {
        assert!(
            !ours.contains(id),
            "{id} is an action now: drop it from NOT_ACTIONS"
        );
    }
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
