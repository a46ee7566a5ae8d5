//! The peers: the same 8-event workflow as `knhk_benches::Workflow`, encoded
//! (a) as a plain `HashMap<String, u32>` token-count Petri net, fired by task name, and
//! (b) as a `statig` hierarchical state machine (the reachable markings as states).
//! Both reset a case in place (no allocation per iteration), as knhk copies a 128-byte case.
#![allow(dead_code)]
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------
// (a) HashMap<String, u32> token-count Petri net
// ---------------------------------------------------------------------------------------

struct Transition {
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// XOR split on `r0 == 0`: outputs[0] when true, outputs[1] (the default) otherwise.
    xor: bool,
}

/// A token-count Petri net keyed by place and transition names.
pub struct HashNet {
    index: HashMap<String, usize>,
    transitions: Vec<Transition>,
    places: Vec<String>,
}

/// One case of a [`HashNet`]: a token count per place name and the guard register.
#[derive(Clone)]
pub struct HashCase {
    pub marking: HashMap<String, u32>,
    pub r0: i64,
}

impl HashNet {
    /// The workflow: A; B (AND split); C ‖ D; E (AND join); F (XOR on r0 == 0); G | H; M.
    pub fn workflow() -> HashNet {
        let spec: [(&str, &[&str], &[&str], bool); 9] = [
            ("A", &["i"], &["c1"], false),
            ("B", &["c1"], &["c2", "c3"], false),
            ("C", &["c2"], &["c4"], false),
            ("D", &["c3"], &["c5"], false),
            ("E", &["c4", "c5"], &["c6"], false),
            ("F", &["c6"], &["c7", "c8"], true),
            ("G", &["c7"], &["c9"], false),
            ("H", &["c8"], &["c9"], false),
            ("M", &["c9"], &["o"], false),
        ];
        let mut index = HashMap::new();
        let mut transitions = Vec::new();
        for (n, (name, ins, outs, xor)) in spec.iter().enumerate() {
            index.insert(name.to_string(), n);
            transitions.push(Transition {
                inputs: ins.iter().map(|s| s.to_string()).collect(),
                outputs: outs.iter().map(|s| s.to_string()).collect(),
                xor: *xor,
            });
        }
        let places = [
            "i", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "o",
        ]
        .map(String::from)
        .to_vec();
        HashNet {
            index,
            transitions,
            places,
        }
    }

    /// A fresh case: one token on `i`.
    pub fn case(&self, r0: i64) -> HashCase {
        let mut marking: HashMap<String, u32> =
            self.places.iter().map(|p| (p.clone(), 0)).collect();
        *marking.get_mut("i").unwrap() = 1;
        HashCase { marking, r0 }
    }

    /// Back to the initial marking, in place.
    #[inline]
    pub fn reset(&self, case: &mut HashCase, r0: i64) {
        for v in case.marking.values_mut() {
            *v = 0;
        }
        *case.marking.get_mut("i").unwrap() = 1;
        case.r0 = r0;
    }

    /// Fires transition `name` if every input place holds a token. Returns false otherwise.
    #[inline]
    pub fn fire(&self, case: &mut HashCase, name: &str) -> bool {
        let Some(&t) = self.index.get(name) else {
            return false;
        };
        let tr = &self.transitions[t];
        if tr
            .inputs
            .iter()
            .any(|p| case.marking.get(p.as_str()).copied().unwrap_or(0) == 0)
        {
            return false;
        }
        for p in &tr.inputs {
            *case.marking.get_mut(p.as_str()).unwrap() -= 1;
        }
        let outs: &[String] = if tr.xor {
            let k = if case.r0 == 0 { 0 } else { 1 };
            &tr.outputs[k..k + 1]
        } else {
            &tr.outputs
        };
        for p in outs {
            match case.marking.get_mut(p.as_str()) {
                Some(v) => *v += 1,
                None => {
                    case.marking.insert(p.clone(), 1);
                }
            }
        }
        true
    }

    /// True when the output place holds the token.
    pub fn done(&self, case: &HashCase) -> bool {
        case.marking.get("o").copied() == Some(1)
    }
}

/// Task names for the 8 events of a case with guard register `r0`.
pub fn event_names(r0: i64) -> [&'static str; 8] {
    [
        "A",
        "B",
        "C",
        "D",
        "E",
        "F",
        if r0 == 0 { "G" } else { "H" },
        "M",
    ]
}

// ---------------------------------------------------------------------------------------
// (b) statig state machine: the reachable markings of the workflow as states
// ---------------------------------------------------------------------------------------

pub mod fsm {
    use statig::prelude::*;

    /// The workflow's tasks as events.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Task {
        A,
        B,
        C,
        D,
        E,
        F,
        G,
        H,
        M,
    }

    /// Shared storage: the guard register.
    #[derive(Debug, Default)]
    pub struct Flow {
        pub r0: i64,
    }

    #[state_machine(
        initial = "State::start()",
        state(derive(Debug, Clone, Copy, PartialEq, Eq))
    )]
    impl Flow {
        #[state]
        fn start(event: &Task) -> Outcome<State> {
            match event {
                Task::A => Transition(State::c1()),
                _ => Handled,
            }
        }
        #[state]
        fn c1(event: &Task) -> Outcome<State> {
            match event {
                Task::B => Transition(State::c2_c3()),
                _ => Handled,
            }
        }
        #[state]
        fn c2_c3(event: &Task) -> Outcome<State> {
            match event {
                Task::C => Transition(State::c4_c3()),
                Task::D => Transition(State::c2_c5()),
                _ => Handled,
            }
        }
        #[state]
        fn c4_c3(event: &Task) -> Outcome<State> {
            match event {
                Task::D => Transition(State::c4_c5()),
                _ => Handled,
            }
        }
        #[state]
        fn c2_c5(event: &Task) -> Outcome<State> {
            match event {
                Task::C => Transition(State::c4_c5()),
                _ => Handled,
            }
        }
        #[state]
        fn c4_c5(event: &Task) -> Outcome<State> {
            match event {
                Task::E => Transition(State::c6()),
                _ => Handled,
            }
        }
        #[state]
        fn c6(&mut self, event: &Task) -> Outcome<State> {
            match event {
                Task::F if self.r0 == 0 => Transition(State::c7()),
                Task::F => Transition(State::c8()),
                _ => Handled,
            }
        }
        #[state]
        fn c7(event: &Task) -> Outcome<State> {
            match event {
                Task::G => Transition(State::c9()),
                _ => Handled,
            }
        }
        #[state]
        fn c8(event: &Task) -> Outcome<State> {
            match event {
                Task::H => Transition(State::c9()),
                _ => Handled,
            }
        }
        #[state]
        fn c9(event: &Task) -> Outcome<State> {
            match event {
                Task::M => Transition(State::end()),
                _ => Handled,
            }
        }
        #[state]
        fn end(event: &Task) -> Outcome<State> {
            let _ = event;
            Handled
        }
    }

    /// A fresh, initialised machine.
    pub fn machine(r0: i64) -> statig::blocking::InitializedStateMachine<Flow> {
        Flow { r0 }.uninitialized_state_machine().init()
    }

    /// The 8 events of a case with guard register `r0`.
    pub fn events(r0: i64) -> [Task; 8] {
        use Task::*;
        [A, B, C, D, E, F, if r0 == 0 { G } else { H }, M]
    }
}
