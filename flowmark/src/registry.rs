//! The SciTags registry of experiments and activities, shipped inside the
//! binary (`flowmark/registry/api.json`, version 1 of 2025-09-04) and
//! replaceable at run time by a newer file (`--registry`, or
//! `flowmark registry refresh` to fetch, check and store one).
//!
//! Activity ids are per experiment ("Data Consolidation" is 4 for atlas and 6
//! for cms), so names are only ever resolved through here.

use std::{collections::BTreeMap, path::Path, sync::LazyLock};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::scitag::MAX_EXPERIMENT;

pub const BUILTIN_JSON: &str = include_str!("../registry/api.json");
/// The published schemas, with their trailing commas removed (the files as
/// published are not strict JSON).
pub const REGISTRY_SCHEMA: &str = include_str!("../registry/registry.schema.json");
pub const FIREFLY_SCHEMA: &str = include_str!("../registry/firefly.schema.json");

static REGISTRY_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile_schema(REGISTRY_SCHEMA));
static FIREFLY_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| compile_schema(FIREFLY_SCHEMA));

fn compile_schema(text: &str) -> jsonschema::Validator {
    // Both schemas are compiled into the binary and covered by tests: a
    // failure here is a build defect, not bad input.
    let schema: serde_json::Value = serde_json::from_str(text).expect("shipped schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("shipped schema compiles")
}

/// Checks a parsed firefly against the published firefly schema; the error
/// names the first violated rule and where.
pub fn validate_firefly(value: &serde_json::Value) -> Result<(), String> {
    FIREFLY_VALIDATOR
        .validate(value)
        .map_err(|e| format!("{} at {}", e, e.instance_path()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Experiment {
    pub name: String,
    pub activities: BTreeMap<u8, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    pub modified: Option<String>,
    pub experiments: BTreeMap<u16, Experiment>,
}

#[derive(Deserialize)]
struct RawRegistry {
    experiments: Vec<RawExperiment>,
    modified: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExperiment {
    exp_name: String,
    exp_id: u32,
    activities: Vec<RawActivity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawActivity {
    activity_name: String,
    activity_id: u32,
}

impl Registry {
    pub fn builtin() -> Registry {
        // Covered by `builtin_registry_parses`.
        Registry::parse(BUILTIN_JSON).expect("shipped registry is valid")
    }

    /// Parses and checks a registry document: the published schema, then the
    /// ranges the flow label needs and unique ids.
    pub fn parse(text: &str) -> anyhow::Result<Registry> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("registry is not JSON")?;
        if let Err(e) = REGISTRY_VALIDATOR.validate(&value) {
            bail!(
                "registry does not match the SciTags registry schema: {e} at {}",
                e.instance_path()
            );
        }
        let raw: RawRegistry = serde_json::from_value(value).context("registry fields")?;
        let mut experiments = BTreeMap::new();
        for e in raw.experiments {
            if !(1..=MAX_EXPERIMENT as u32).contains(&e.exp_id) {
                bail!(
                    "experiment {:?}: id {} outside 1..={MAX_EXPERIMENT}",
                    e.exp_name,
                    e.exp_id
                );
            }
            let mut activities = BTreeMap::new();
            for a in e.activities {
                if a.activity_id > 63 {
                    bail!(
                        "experiment {:?}: activity {:?} id {} outside 0..=63",
                        e.exp_name,
                        a.activity_name,
                        a.activity_id
                    );
                }
                if activities
                    .insert(a.activity_id as u8, a.activity_name)
                    .is_some()
                {
                    bail!(
                        "experiment {:?}: activity id {} listed twice",
                        e.exp_name,
                        a.activity_id
                    );
                }
            }
            let exp = Experiment {
                name: e.exp_name,
                activities,
            };
            if let Some(old) = experiments.insert(e.exp_id as u16, exp) {
                bail!("experiment id {} listed twice ({:?})", e.exp_id, old.name);
            }
        }
        Ok(Registry {
            modified: raw.modified,
            experiments,
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<Registry> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading registry {}", path.display()))?;
        Registry::parse(&text).with_context(|| format!("registry {}", path.display()))
    }

    /// The built-in registry, or the file when one is given.
    pub fn from_option(path: Option<&Path>) -> anyhow::Result<Registry> {
        match path {
            Some(p) => Registry::load(p),
            None => Ok(Registry::builtin()),
        }
    }

    pub fn experiment_name(&self, experiment: u16) -> Option<&str> {
        self.experiments.get(&experiment).map(|e| e.name.as_str())
    }

    pub fn activity_name(&self, experiment: u16, activity: u8) -> Option<&str> {
        self.experiments
            .get(&experiment)?
            .activities
            .get(&activity)
            .map(String::as_str)
    }

    /// Experiment id by name, case-insensitively ("cms", "ATLAS").
    pub fn experiment_id(&self, name: &str) -> Option<u16> {
        self.experiments
            .iter()
            .find(|(_, e)| e.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| *id)
    }

    /// Activity id of an experiment by name, case-insensitively.
    pub fn activity_id(&self, experiment: u16, name: &str) -> Option<u8> {
        let e = self.experiments.get(&experiment)?;
        e.activities
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_parses() {
        let r = Registry::builtin();
        assert_eq!(r.experiment_name(3), Some("cms"));
        assert_eq!(r.activity_name(3, 14), Some("Analysis Input"));
        // Same activity name, different ids per experiment.
        assert_eq!(r.activity_id(2, "Data Consolidation"), Some(4));
        assert_eq!(r.activity_id(3, "data consolidation"), Some(6));
        assert_eq!(r.experiment_id("ATLAS"), Some(2));
    }

    #[test]
    fn bad_registries_are_refused_with_a_reason() {
        for (doc, want) in [
            ("not json", "not JSON"),
            (r#"{"version": 1}"#, "schema"),
            (
                r#"{"version": 1, "experiments": [{"expName": "x", "expId": 2000, "activities": [{"activityName": "a", "activityId": 1}]}]}"#,
                "outside",
            ),
            (
                r#"{"version": 1, "experiments": [{"expName": "x", "expId": 2, "activities": [{"activityName": "a", "activityId": 64}]}]}"#,
                "outside",
            ),
            (
                r#"{"version": 1, "experiments": [{"expName": "x", "expId": 2, "activities": [{"activityName": "a", "activityId": 1}, {"activityName": "b", "activityId": 1}]}]}"#,
                "twice",
            ),
        ] {
            let err = format!("{:#}", Registry::parse(doc).unwrap_err());
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn schemas_compile() {
        LazyLock::force(&REGISTRY_VALIDATOR);
        LazyLock::force(&FIREFLY_VALIDATOR);
    }
}
