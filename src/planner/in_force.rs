//! The plan in force, so that a plan chosen again is not applied again.
//!
//! Between plans the quality controller may step a tenant down to a
//! lighter variant (a deadline at risk). A planner that answers the same
//! mapping at its next decision — its intensity within the hysteresis, or
//! a search that confirmed it — must leave those steps in place: applying
//! the plan again would reset every tenant to the planned variant and undo
//! the safety net's work. The runtime's governor and the simulator both
//! decide through this one rule.

/// The plan last applied, of any plan type that compares whole (the
/// runtime's [`Mapping`](super::Mapping), the simulator's candidates).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInForce<P> {
    current: Option<P>,
}

impl<P> Default for PlanInForce<P> {
    fn default() -> Self {
        PlanInForce { current: None }
    }
}

impl<P: PartialEq> PlanInForce<P> {
    /// None in force yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether applying `plan` would change what is in force: false when
    /// it is the plan last applied (then leave everything as it is).
    ///
    /// ```
    /// use ecomap::planner::PlanInForce;
    /// let mut in_force = PlanInForce::new();
    /// assert!(in_force.changes(&(1, vec![0, 2])));
    /// in_force.applied((1, vec![0, 2]));
    /// assert!(!in_force.changes(&(1, vec![0, 2])));
    /// assert!(in_force.changes(&(1, vec![0, 1])));
    /// ```
    pub fn changes(&self, plan: &P) -> bool {
        self.current.as_ref() != Some(plan)
    }

    /// Record that `plan` was applied (after it took effect: a mode the
    /// platform refused leaves the old plan in force).
    pub fn applied(&mut self, plan: P) {
        self.current = Some(plan);
    }

    /// The plan in force, if any was applied.
    pub fn current(&self) -> Option<&P> {
        self.current.as_ref()
    }
}
