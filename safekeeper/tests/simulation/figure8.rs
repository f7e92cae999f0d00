//! Raft's "Figure 8" as a scripted scenario: the interleaving in which a proposer that
//! counts acknowledgements of WAL below its term start (older terms' WAL it is still
//! recovering) loses committed WAL. Random schedules almost never produce it (the
//! acceptors' refusal to truncate below their own commit LSN hides it unless the commit
//! LSN never reached them), so it is played step by step, on the real proposer core and
//! acceptors, with the network choosing nothing: each event is the first one possible.
//!
//! Three acceptors A0–A2, four proposer incarnations P0–P3 (terms 1–4):
//! 1. P0 (votes A0, A1) writes X; only A0 receives it.
//! 2. P1 (votes A1, A2) writes Y; only A2 receives it (its Elected never reaches A1).
//! 3. P2 (votes A0, A1) continues A0's log (term start = end of X) and recovers X to A1.
//!    As soon as A1 acknowledges the first part X' of X, the unsafe rule counts A0's and
//!    A1's acknowledgements and commits X'; P2 dies before any acceptor hears that commit.
//! 4. P3 (votes A1, A2): A1's last log term is 1 (its term-3 entry starts at the end of X,
//!    above its flush LSN), A2's is 2, so A2 is the donor and A1 truncates X': the
//!    committed X' is left on A0 alone, which the checker's quorum invariant reports.
//!
//! With the production rule, step 3 commits nothing until A1 holds all of X (then its
//! last log term is 3 and P3 continues it): no violation.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use utils::Lsn;

use super::{Ev, Params, RunOptions, World};

/// How a scripted run ended.
#[derive(Debug)]
pub struct Figure8Outcome {
    /// The first violation the checker reported.
    pub violation: Option<String>,
    /// What P2 reported committed before it died (`None`: nothing).
    pub p2_commit: Option<Lsn>,
    /// The steps, for a failing assertion's message.
    pub trace: Vec<String>,
}

impl World {
    /// Plays the scenario (see the module docs) with `opts`' rules under `root`.
    pub fn figure8(root: &std::path::Path, opts: RunOptions) -> Result<Figure8Outcome, String> {
        let params = Params {
            acceptors: 3,
            proposers: 4,
            steps: 0,
            wal_budget: u64::MAX,
            max_append: 1000,
            loss: 0.0,
            fault: 0.0,
        };
        let mut w = World::with_params(StdRng::seed_from_u64(8), params, root, opts)?;
        // Nobody starts on their own: the script starts each proposer.
        for p in &mut w.proposers {
            p.restart_at_ms = u64::MAX;
        }
        let result = w.play_figure8();
        let p2_commit = (w.proposers[2].commit > w.base).then_some(w.proposers[2].commit);
        if let Err(e) = result
            && w.violation.is_none()
        {
            return Err(format!("{e}\n{}", w.trace_text()));
        }
        Ok(Figure8Outcome {
            violation: w.violation.clone(),
            p2_commit,
            trace: w.trace.iter().cloned().collect(),
        })
    }

    fn trace_text(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n  ")
    }

    fn play_figure8(&mut self) -> Result<(), String> {
        // 1. P0 in term 1 with A0 and A1; X goes to A0 only.
        self.only(0, &[0, 1]);
        self.start_proposer(0)?;
        self.settle("P0 elected", |w| w.compute_started(0))?;
        self.settle("P0's Elected delivered", |w| {
            w.acceptor_term(1) == Some(1) && w.quiet()
        })?;
        self.only(0, &[0]);
        self.break_link((0, 1), false)?;
        let x: Vec<Vec<u8>> = (0..30).map(|i| vec![i as u8; 300]).collect();
        self.emit_records(0, x)?;
        let end_x = self.compute_end(0);
        self.settle("X on A0", |w| w.flush_of(0) == Some(end_x))?;
        self.stop_proposer(0)?;
        self.log(format!("script: X ends at {end_x}"));

        // 2. P1 in term 2 with A1 and A2; its Elected reaches A2 only; Y goes to A2.
        self.only(1, &[1, 2]);
        self.start_proposer(1)?;
        self.settle("P1 elected", |w| w.compute_started(1))?;
        self.only(1, &[2]);
        self.break_link((1, 1), false)?;
        let y: Vec<Vec<u8>> = (0..8).map(|i| vec![0xA0 + i as u8; 200]).collect();
        self.emit_records(1, y)?;
        let end_y = self.compute_end(1);
        self.settle("Y on A2", |w| w.flush_of(2) == Some(end_y))?;
        self.stop_proposer(1)?;
        self.log(format!("script: Y ends at {end_y}"));

        // 3. P2 in term 3 with A0 and A1: recovers X to A1; dies once it committed
        //    anything, or once A1 holds all of X.
        self.only(2, &[0, 1]);
        self.start_proposer(2)?;
        let base = self.base;
        self.settle("P2 commits or A1 holds X", |w| {
            w.proposers[2].commit > base || w.flush_of(1) == Some(end_x)
        })?;
        self.log(format!(
            "script: P2 dies; A1 flushed {:?}, P2 committed {}",
            self.flush_of(1),
            self.proposers[2].commit
        ));
        self.stop_proposer(2)?;

        // 4. P3 in term 4 with A1 and A2.
        self.only(3, &[1, 2]);
        self.start_proposer(3)?;
        self.settle("P3 elected and its log on A1", |w| {
            w.compute_started(3) && w.quiet() && w.flush_of(1) == Some(w.compute_end(3))
        })?;
        Ok(())
    }

    /// Proposer `p` reaches only `acceptors` (the others are partitioned away for good).
    fn only(&mut self, p: usize, acceptors: &[usize]) {
        for a in 0..self.acceptors.len() {
            if acceptors.contains(&a) {
                self.net.blocked.remove(&(p, a));
            } else {
                self.net.blocked.insert((p, a), u64::MAX);
            }
        }
    }

    fn compute_started(&self, p: usize) -> bool {
        self.proposers[p].compute.is_some()
    }

    fn compute_end(&self, p: usize) -> Lsn {
        self.proposers[p]
            .compute
            .as_ref()
            .map_or(Lsn::INVALID, |c| c.end())
    }

    fn flush_of(&self, a: usize) -> Option<Lsn> {
        self.acceptors[a].acc.as_ref().map(|x| x.flush_lsn())
    }

    fn acceptor_term(&self, a: usize) -> Option<u64> {
        self.acceptors[a].acc.as_ref().map(|x| x.term())
    }

    /// No event is possible without time passing.
    fn quiet(&self) -> bool {
        self.next_immediate().is_none()
    }

    /// The first event possible now, in a fixed order: a pending connect or fetch, a step
    /// of a flush task (so every append is acknowledged before the next is taken), then a
    /// message, towards the proposer first.
    fn next_immediate(&self) -> Option<Ev> {
        if !self.pending.is_empty() {
            return Some(Ev::Pending(0));
        }
        if let Some(ev) = (0..self.acceptors.len()).find_map(|a| self.flush_step(a)) {
            return Some(ev);
        }
        for (&pair, link) in &self.net.links {
            if self.net.is_blocked(pair, self.now_ms) {
                continue;
            }
            if !link.to_prop.is_empty() {
                return Some(Ev::Deliver(pair, false));
            }
            if !link.to_acc.is_empty() {
                return Some(Ev::Deliver(pair, true));
            }
        }
        None
    }

    /// Takes the first possible event (or lets 10 ms pass) until `done`, checking every
    /// invariant after each; fails after 60 virtual seconds. A violation ends it early.
    fn settle(&mut self, what: &str, done: impl Fn(&World) -> bool) -> Result<(), String> {
        let deadline = self.now_ms + 60_000;
        while !done(self) {
            if self.violation.is_some() {
                return Err(format!("violation while waiting for: {what}"));
            }
            if self.now_ms > deadline {
                return Err(format!("script: timed out waiting for: {what}"));
            }
            self.step += 1;
            match self.next_immediate() {
                Some(ev) => self.apply(ev)?,
                None => {
                    self.now_ms += 10;
                    let now = self.epoch + Duration::from_millis(self.now_ms);
                    for p in 0..self.proposers.len() {
                        if let Some(core) = &mut self.proposers[p].core {
                            core.tick(now);
                            self.drain(p)?;
                        }
                    }
                }
            }
            self.check()?;
        }
        Ok(())
    }
}
