//! What the RLS probe tried, and how each attempt was refused or what it leaked.

pub(super) struct Attempt {
    pub(super) path: &'static str,
    pub(super) what: String,
    /// `Ok(how it was refused)` or `Err(what leaked)`.
    pub(super) result: Result<String, String>,
}

#[derive(Default)]
pub(super) struct Attempts(pub(super) Vec<Attempt>);

impl Attempts {
    pub(super) fn push(
        &mut self,
        path: &'static str,
        what: impl Into<String>,
        result: Result<String, String>,
    ) {
        self.0.push(Attempt {
            path,
            what: what.into(),
            result,
        });
    }
}
