//! The corpus covers the catalogue, and every fixture says where it comes from.

use defender_soar::defender::endpoints::ALL;

use super::corpus::{self, TOKEN_ENDPOINTS, key, path_fits};

#[test]
fn every_catalogue_endpoint_has_a_fixture() {
    let fixtures = corpus::all();
    let missing: Vec<String> = ALL
        .iter()
        .map(|e| key(e))
        .filter(|k| !fixtures.iter().any(|f| f.endpoint() == k && !f.synthetic()))
        .collect();
    assert!(
        missing.is_empty(),
        "catalogue endpoints without a fixture from Microsoft's pages:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_fixture_names_its_source_and_a_known_endpoint() {
    let mut problems = Vec::new();
    for f in corpus::all() {
        let j = &f.json;
        if f.synthetic() {
            let notes = j["notes"].as_str().unwrap_or("");
            if !notes.contains("defender-api.md") {
                problems.push(format!(
                    "{}: synthetic, but its notes name no defender-api.md section",
                    f.name
                ));
            }
        } else {
            let src = &j["source"];
            let repo = src["repository"].as_str().unwrap_or("");
            let path = src["path"].as_str().unwrap_or("");
            let commit = src["commit"].as_str().unwrap_or("");
            if !repo.contains('/') || !path.ends_with(".md") {
                problems.push(format!("{}: source repository or path missing", f.name));
            }
            if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("{}: source commit is not 40 hex digits", f.name));
            }
        }
        let endpoint = f.endpoint();
        let known = f.catalogue_endpoint().is_some() || TOKEN_ENDPOINTS.contains(&endpoint);
        if !known {
            problems.push(format!(
                "{}: endpoint {endpoint:?} is in no catalogue entry",
                f.name
            ));
        }
        let method = j["request"]["method"].as_str().unwrap_or("");
        let path = j["request"]["path"].as_str().unwrap_or("");
        if let Some(e) = f.catalogue_endpoint() {
            // A download of a link the API handed out is not a path under the API.
            if !path.starts_with("https://") && !path_fits(e.path, path) {
                problems.push(format!(
                    "{}: request path {path} does not fit {}",
                    f.name, e.path
                ));
            }
            if method != e.method.as_str() {
                problems.push(format!(
                    "{}: request method {method} is not {}",
                    f.name, e.method
                ));
            }
        }
        if !(100..600).contains(&f.status()) {
            problems.push(format!("{}: response status missing", f.name));
        }
        if j["response"].get("body").is_none() || j["request"].get("body").is_none() {
            problems.push(format!(
                "{}: request or response body key missing (null for none)",
                f.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "fixture problems:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn request_paths_find_their_endpoint() {
    // The replay server picks answers by endpoint: the most specific template wins.
    let cases = [
        ("POST", "/api/alerts/batchUpdate", "/api/alerts/batchUpdate"),
        ("GET", "/api/alerts/da637_1", "/api/alerts/{id}"),
        ("POST", "/api/indicators/import", "/api/indicators/import"),
        (
            "GET",
            "/api/machines/findbyip(ip='10.1.4.21',timestamp=2025-11-01T09:20:30Z)",
            "/api/machines/findbyip(ip={ip},timestamp={timestamp})",
        ),
        ("GET", "/api/machines/abc", "/api/machines/{id}"),
        (
            "GET",
            "/api/vulnerabilities/machinesVulnerabilities?$top=5",
            "/api/vulnerabilities/machinesVulnerabilities",
        ),
    ];
    for (method, path, want) in cases {
        let got = corpus::endpoint_of(method, path).map(|e| e.path);
        assert_eq!(got, Some(want), "{method} {path}");
    }
    assert!(corpus::endpoint_of("GET", "/api/unknown/thing").is_none());
}
