//! `ovasabi schema list | show | check | asyncapi | docs`.

use std::path::PathBuf;

use ovasabi_schema::check::{self, Finding};
use ovasabi_schema::Registry;
use serde::Serialize;

use crate::cli::{
    Format, Global, SchemaCheckArgs, SchemaCommand, SchemaListArgs, SchemaOutputArgs,
    SchemaShowArgs,
};
use crate::cmd::{load_failure, registry};
use crate::failure::Failure;
use crate::output::outln;

/// Runs a `schema` command.
pub(crate) async fn run(global: &Global, cmd: SchemaCommand) -> Result<(), Failure> {
    match cmd {
        SchemaCommand::List(args) => list(global, args),
        SchemaCommand::Show(args) => show(global, args),
        SchemaCommand::Check(args) => check_schemas(global, args),
        SchemaCommand::Asyncapi(args) => {
            let registry = registry(global)?;
            let doc = ovasabi_schema::asyncapi::document(&registry);
            let json = args.json
                || args
                    .out
                    .output
                    .as_ref()
                    .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
            let text = if json {
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            } else {
                ovasabi_schema::asyncapi::to_yaml(&doc)
            };
            write_output(args.out, &text)
        }
        SchemaCommand::Docs(args) => {
            let registry = registry(global)?;
            write_output(args, &ovasabi_schema::catalog::markdown(&registry))
        }
    }
}

fn write_output(args: SchemaOutputArgs, text: &str) -> Result<(), Failure> {
    match args.output {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display()))),
        None => {
            outln!("{}", text.trim_end());
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct TypeRow<'a> {
    event_type: &'a str,
    versions: Vec<u32>,
    latest: u32,
    topic: &'a str,
    compatibility: String,
    producers: &'a [String],
    consumers: &'a [String],
}

fn list(global: &Global, args: SchemaListArgs) -> Result<(), Failure> {
    let registry = registry(global)?;
    let rows: Vec<TypeRow<'_>> = registry
        .types()
        .map(|t| TypeRow {
            event_type: &t.meta.event_type,
            versions: t.versions.keys().copied().collect(),
            latest: t.latest().version,
            topic: &t.meta.topic,
            compatibility: t.meta.compatibility.to_string(),
            producers: &t.meta.producers,
            consumers: &t.meta.consumers,
        })
        .collect();
    match args.format {
        Format::Json => {
            for row in &rows {
                outln!("{}", serde_json::to_string(row).unwrap_or_default());
            }
        }
        Format::Pretty => {
            outln!(
                "{:<26} {:<9} {:<20} {:<20} {:<14} CONSUMERS",
                "TYPE",
                "VERSIONS",
                "TOPIC",
                "COMPATIBILITY",
                "PRODUCERS"
            );
            for row in &rows {
                let versions: Vec<String> = row.versions.iter().map(|v| format!("v{v}")).collect();
                outln!(
                    "{:<26} {:<9} {:<20} {:<20} {:<14} {}",
                    row.event_type,
                    versions.join(","),
                    row.topic,
                    row.compatibility,
                    row.producers.join(","),
                    row.consumers.join(",")
                );
            }
        }
    }
    Ok(())
}

fn show(global: &Global, args: SchemaShowArgs) -> Result<(), Failure> {
    let registry = registry(global)?;
    let Some(schema) = registry.get(&args.event_type) else {
        return Err(Failure::usage(format!(
            "no schema for event type `{}`; `ovasabi schema list` shows the types",
            args.event_type
        )));
    };
    let version = match args.schema_version {
        Some(v) => schema.versions.get(&v).ok_or_else(|| {
            Failure::usage(format!(
                "{} has no version {v}; it has {}",
                args.event_type,
                schema
                    .versions
                    .keys()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => schema.latest(),
    };
    outln!(
        "{}",
        serde_json::to_string_pretty(&version.schema).unwrap_or_default()
    );
    Ok(())
}

fn check_schemas(global: &Global, args: SchemaCheckArgs) -> Result<(), Failure> {
    let current = match &args.dir {
        Some(dir) => Registry::from_dir(dir).map_err(load_failure)?,
        None => registry(global)?,
    };
    let mut findings = check::history(&current);
    let mut compared = format!("{} types", current.types().count());
    if let Some(rev) = &args.against {
        let dir: PathBuf = match &args.dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir()
                .ok()
                .and_then(|cwd| check::find_schemas_dir(&cwd))
                .ok_or_else(|| {
                    Failure::usage(
                        "--against needs the repository's schemas/ directory: run inside the \
                         repository or pass --dir",
                    )
                })?,
        };
        let files = check::files_at_revision(&dir, rev)
            .map_err(|e| Failure::usage(format!("--against {rev}: {e}")))?;
        if files.is_empty() {
            compared.push_str(&format!(", nothing released at {rev}"));
        } else {
            let released = Registry::from_files(files).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Failure::runtime(format!(
                    "the schemas at {rev} do not load:\n  {}",
                    lines.join("\n  ")
                ))
            })?;
            compared.push_str(&format!(
                ", against {} released at {rev}",
                released.types().count()
            ));
            findings.extend(check::against_released(&current, &released, rev));
        }
    }
    report(&findings, args.format, &compared);
    if findings.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} breaking change{} in the event schemas",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        )))
    }
}

fn report(findings: &[Finding], format: Format, compared: &str) {
    match format {
        Format::Json => {
            for f in findings {
                outln!("{}", serde_json::to_string(f).unwrap_or_default());
            }
        }
        Format::Pretty => {
            for f in findings {
                outln!("breaking: {f}");
            }
            if findings.is_empty() {
                eprintln!("schemas ok: {compared}, every version compatible under its mode");
            }
        }
    }
}
