//! Device profiles from files (`[fleet] profile_files`), as `fleetbench calibrate` writes them: a
//! machine's fixed characteristics and the synthetic model's parameters fitted to its trace. A
//! file's profile joins the built-in ones by its `name` in `[fleet] profiles`.

use serde::{Deserialize, Serialize};

/// The synthetic model's parameters: the load's daily curve, noise and bursts, and how temperature
/// follows load. `fleetbench calibrate` fits them to a recorded trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelParams {
    /// Load (0–1) at night.
    pub idle_load: f64,
    /// Added at the working day's peak (a half sine from 08:00 to 18:00 UTC).
    pub daily_amplitude: f64,
    /// Half-width of the uniform noise on load.
    pub noise: f64,
    /// Chance that a sample carries a burst.
    pub burst_rate: f64,
    /// A burst's mean added load (uniform ± 0.15 around it).
    pub burst_size: f64,
    /// Temperature the CPU settles at when idle, and what full load adds.
    pub temp_idle_c: f64,
    pub temp_per_load_c: f64,
    /// Share of the gap to the settling temperature closed per sample.
    pub temp_inertia: f64,
    /// Half-width of the uniform noise on temperature.
    pub temp_noise: f64,
    /// Memory in use as a share of RAM around which the machine wanders.
    pub mem_used_fraction: f64,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            idle_load: 0.15,
            daily_amplitude: 0.45,
            noise: 0.05,
            burst_rate: 0.03,
            burst_size: 0.45,
            temp_idle_c: 35.0,
            temp_per_load_c: 45.0,
            temp_inertia: 0.3,
            temp_noise: 0.5,
            mem_used_fraction: 0.45,
        }
    }
}

/// A device profile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub name: String,
    /// `laptop`, `desktop`, `workstation` or `server`.
    pub form_factor: String,
    pub cores: u16,
    pub ram_bytes: u64,
    pub disk_bytes: u64,
    #[serde(default)]
    pub has_gpu: bool,
    #[serde(default)]
    pub has_battery: bool,
    #[serde(default)]
    pub model: ModelParams,
}

impl DeviceProfile {
    /// Reads and checks a profile file; errors say where (`file:line:column`).
    pub fn load(path: &std::path::Path) -> Result<DeviceProfile, crate::ScenarioError> {
        let file = path.display().to_string();
        let located = |line: usize, column: usize, message: String| {
            crate::ScenarioError(vec![crate::Located {
                file: file.clone(),
                line,
                column,
                message,
            }])
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| located(0, 0, format!("cannot read the device profile: {e}")))?;
        let p: DeviceProfile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let before = &text[..at.min(text.len())];
            located(
                before.matches('\n').count() + 1,
                before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                e.message().trim().to_string(),
            )
        })?;
        if !crate::model::PROFILES.contains(&p.form_factor.as_str()) {
            return Err(located(
                0,
                0,
                format!(
                    "form_factor {:?}: expected one of {:?}",
                    p.form_factor,
                    crate::model::PROFILES
                ),
            ));
        }
        if crate::model::PROFILES.contains(&p.name.as_str()) || p.name.trim().is_empty() {
            return Err(located(
                0,
                0,
                format!(
                    "name {:?} must be new (not empty, not a built-in profile)",
                    p.name
                ),
            ));
        }
        let m = &p.model;
        let fractions = [
            m.idle_load,
            m.daily_amplitude,
            m.noise,
            m.burst_rate,
            m.burst_size,
            m.temp_inertia,
            m.mem_used_fraction,
        ];
        if p.cores == 0 || p.ram_bytes == 0 || fractions.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(located(0, 0, "cores and ram_bytes must be above 0, and the model's loads, rates and inertia between 0 and 1".into()));
        }
        Ok(p)
    }
}
