//! Rise/fall hysteresis: a check changes state only after `rise` passes or
//! `fall` failures in a row, so one lost probe does not flap a route.

/// Starts down; `record` returns whether the state changed.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl RiseFall {
    /// `rise` and `fall` below 1 are taken as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            streak: 0,
        }
    }

    /// Starts in the state given: a check that replaces one which was up
    /// stays up until `fall` failures say otherwise.
    pub fn starting(rise: u32, fall: u32, up: bool) -> Self {
        Self {
            up,
            ..Self::new(rise, fall)
        }
    }

    pub fn up(&self) -> bool {
        self.up
    }

    /// Records one probe result; true when the state flipped.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RiseFall;

    #[test]
    fn rises_after_rise_passes_and_falls_after_fall_failures() {
        let mut rf = RiseFall::new(2, 3);
        assert!(!rf.up());
        assert!(!rf.record(true));
        assert!(rf.record(true));
        assert!(rf.up());
        // Two failures, then a pass: the streak starts over.
        assert!(!rf.record(false));
        assert!(!rf.record(false));
        assert!(!rf.record(true));
        assert!(!rf.record(false));
        assert!(!rf.record(false));
        assert!(rf.record(false));
        assert!(!rf.up());
        // A pass between failures while down resets the rise streak.
        assert!(!rf.record(true));
        assert!(!rf.record(false));
        assert!(!rf.record(true));
        assert!(rf.record(true));
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_probe() {
        let mut rf = RiseFall::new(1, 1);
        assert!(rf.record(true));
        assert!(rf.record(false));
        assert!(!rf.record(false));
        assert!(rf.record(true));
    }
}
