//! `docs/recipes.md` held to the code: every example, test file, route, environment
//! variable and Rust API it names exists, every seed keeps its section of differences, and
//! each recipe listens on the port the table gives. A rename or a removal in the code that
//! the document does not follow fails here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

const SEEDS: [&str; 5] = [
    "000 Recurse Center",
    "001 Apache Iggy",
    "002 RapidPipeline",
    "003 Rack Gateway",
    "004 Tokencraft",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/recipes.md")).unwrap()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of the library, the examples and the recipe tests.
fn code() -> String {
    let mut files = Vec::new();
    for dir in ["src", "examples", "tests/management"] {
        rust_files(&root().join(dir), &mut files);
    }
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text between backticks, inline spans only.
fn spans(doc: &str) -> Vec<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The relative targets of the document's links: `](../x)`.
fn links(doc: &str) -> Vec<String> {
    doc.split("](../")
        .skip(1)
        .map(|s| s.split(')').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_seed_has_its_section_of_differences() {
    let doc = doc();
    let (_, differences) = doc
        .split_once("\n## Differences that remain\n")
        .expect("a section `## Differences that remain`");
    for seed in SEEDS {
        let heading = format!("\n### {seed}\n");
        let (_, rest) = differences
            .split_once(&heading)
            .unwrap_or_else(|| panic!("no section {heading:?}"));
        let section = rest.split("\n### ").next().unwrap();
        let items = section.lines().filter(|l| l.starts_with("- **")).count();
        assert!(
            items >= 2,
            "{seed}: {items} differences, each `- **what.** why`"
        );
        for item in section.split("\n- ").skip(1) {
            assert!(
                item.split_whitespace().count() >= 12,
                "{seed}: a difference without its reason: {item:?}"
            );
        }
    }
    // The table names each seed once, with its example and its test.
    for seed in SEEDS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {seed} |")))
            .unwrap_or_else(|| panic!("no table row for {seed}"));
        assert!(row.contains("../examples/") && row.contains("../tests/management/recipe_"));
    }
}

#[test]
fn every_file_the_document_links_exists() {
    let links = links(&doc());
    assert!(links.len() >= 10, "{links:?}");
    for target in links {
        assert!(
            root().join(&target).is_file(),
            "docs/recipes.md links {target}, which does not exist"
        );
    }
}

#[test]
fn each_recipe_listens_on_the_port_of_its_row() {
    for row in doc().lines().filter(|l| l.starts_with("| 00")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let example = links(cells[1]).pop().unwrap();
        let port = cells[3].trim();
        let text = std::fs::read_to_string(root().join(&example)).unwrap();
        assert!(
            text.contains(&format!("\"127.0.0.1:{port}\"")),
            "{example} does not default to port {port}"
        );
        let test = links(cells[2]).pop().unwrap();
        let test_text = std::fs::read_to_string(root().join(&test)).unwrap();
        assert!(
            test_text.contains(&format!("#[path = \"../../{example}\"]")),
            "{test} does not include {example}"
        );
    }
}

/// A route named in the document, e.g. `POST /tokens/{id}/rotate` or `/auth/tokens`, is
/// in the code: as one path literal, or as a mount point and a route below it.
#[test]
fn every_route_the_document_names_is_one_the_code_serves() {
    let code = code();
    let quoted = |p: &str| code.contains(&format!("\"{p}\""));
    let mut routes = 0;
    for span in spans(&doc()) {
        let path = match span.split_once(' ') {
            Some((m, p)) if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m) => p,
            None if span.starts_with('/') && span.len() > 1 => span.as_str(),
            _ => continue,
        };
        let path = path.split('?').next().unwrap();
        routes += 1;
        let found = quoted(path)
            || path
                .match_indices('/')
                .skip(1)
                .any(|(i, _)| quoted(&path[..i]) && quoted(&path[i..]));
        assert!(
            found,
            "docs/recipes.md names the route {span:?}, which the code does not serve"
        );
    }
    assert!(routes >= 8, "{routes} routes named");
}

/// An environment variable named in the document (`KEYGATE_ADDR`, `RPD_EMAIL`, …) is read
/// by the code.
#[test]
fn every_environment_variable_the_document_names_is_read() {
    let code = code();
    let mut vars = 0;
    for span in spans(&doc()) {
        let is_var = span.contains('_')
            && span
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_var {
            vars += 1;
            assert!(
                code.contains(&format!("\"{span}\"")),
                "docs/recipes.md names {span}, which no code reads"
            );
        }
    }
    assert!(vars >= 1);
}

/// A Rust API named as `Type::item` (`Tokens::get`, `TokenKind::with_inactivity_expiry`,
/// `AuthLayer::require`) exists: the type is defined and has that function.
#[test]
fn every_api_the_document_names_exists() {
    let code = code();
    let mut apis = 0;
    for span in spans(&doc()) {
        let Some((ty, item)) = span.split_once("::") else {
            continue;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(ty) || !ident(item) || !ty.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        apis += 1;
        assert!(
            ["struct", "enum", "trait"]
                .iter()
                .any(|k| code.contains(&format!("pub {k} {ty}"))),
            "docs/recipes.md names {span}, but there is no public type {ty}"
        );
        assert!(
            code.contains(&format!("fn {item}(")) || code.contains(&format!("fn {item}<")),
            "docs/recipes.md names {span}, but there is no function {item}"
        );
    }
    // A bare type name (`AuthLayer`, `RenderRejection`) is a public type too, unless it is
    // the seed system's own.
    const THEIRS: [&str; 1] = ["IdentityInfo"];
    for span in spans(&doc()) {
        let camel = span.starts_with(|c: char| c.is_ascii_uppercase())
            && span.chars().any(|c| c.is_ascii_lowercase())
            && span.chars().all(|c| c.is_ascii_alphanumeric());
        if camel && !THEIRS.contains(&span.as_str()) {
            assert!(
                ["struct", "enum", "trait"]
                    .iter()
                    .any(|k| code.contains(&format!("pub {k} {span}"))),
                "docs/recipes.md names {span}, which is no public type"
            );
        }
    }
    assert!(apis >= 8, "{apis} APIs named");
}

/// A test the document names by its function name exists.
#[test]
fn every_test_the_document_names_exists() {
    let code = code();
    let doc = doc();
    let named: Vec<&str> = doc
        .split("test `")
        .skip(1)
        .map(|s| s.split('`').next().unwrap())
        .collect();
    assert!(!named.is_empty());
    for name in named {
        assert!(
            code.contains(&format!("async fn {name}(")) || code.contains(&format!("fn {name}(")),
            "docs/recipes.md names the test {name}, which does not exist"
        );
    }
}
