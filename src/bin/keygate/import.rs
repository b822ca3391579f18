//! `keygate token import`: tokens of another system, by their SHA-256, from JSON Lines.

use std::io::Read as _;

use keygate::axum::management::{ImportEntry, ImportResponse, ImportResult};
use keygate::tokens::ImportToken;
use keygate::{TokenError, Tokens};

use super::{Failure, TokenImport};

fn read_input(args: &TokenImport) -> Result<String, Failure> {
    match args.file.as_deref() {
        Some(path) if path != std::path::Path::new("-") => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display()))),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
            Ok(text)
        }
    }
}

/// One line's request, or why it is invalid.
fn request(line: &str) -> Result<ImportToken, String> {
    let e: ImportEntry = serde_json::from_str(line).map_err(|e| format!("invalid entry: {e}"))?;
    e.into_request("keygate-cli")
}

pub(super) async fn token_import(tokens: &Tokens, args: TokenImport) -> Result<(), Failure> {
    let text = read_input(&args)?;
    let mut results = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let lineno = n + 1;
        let outcome = match request(line) {
            Ok(req) => {
                let who = format!("{}/{}", req.owner(), req.name());
                match tokens.import(req).await {
                    Ok(record) => Ok((record.id, who)),
                    Err(TokenError::Store(e)) => {
                        return Err(Failure::store(
                            &format!(
                                "the token store failed at line {lineno} (the lines before it were processed)"
                            ),
                            e,
                        ));
                    }
                    Err(e @ TokenError::DuplicateHash) => Err(("duplicate", format!("{who}: {e}"))),
                    Err(e @ TokenError::NameTaken) => Err(("name_taken", format!("{who}: {e}"))),
                    Err(e @ TokenError::LimitReached) => {
                        Err(("token_limit", format!("{who}: {e}")))
                    }
                    Err(e) => Err(("invalid_request", format!("{who}: {e}"))),
                }
            }
            Err(message) => Err(("invalid_request", message)),
        };
        match &outcome {
            Ok((id, who)) if !args.output.json => println!("line {lineno}: imported {id} ({who})"),
            Err((_, message)) if !args.output.json => {
                println!("line {lineno}: error: {message}");
            }
            _ => {}
        }
        results.push(match outcome {
            Ok((id, _)) => ImportResult {
                index: lineno,
                id: Some(id),
                error: None,
                code: None,
            },
            Err((code, message)) => ImportResult {
                index: lineno,
                id: None,
                error: Some(message),
                code: Some(code.to_owned()),
            },
        });
    }
    let imported = results.iter().filter(|r| r.id.is_some()).count();
    let failed = results.len() - imported;
    if args.output.json {
        let answer = ImportResponse {
            imported,
            failed,
            results,
        };
        println!("{}", serde_json::to_string(&answer).unwrap_or_default());
    } else {
        eprintln!("{imported} imported, {failed} failed");
    }
    if failed > 0 {
        return Err(Failure::Usage(format!(
            "{failed} of {} entries were not imported",
            imported + failed
        )));
    }
    Ok(())
}
