//! Guards: data, not code. A guard compares case registers with constants or registers; libknhk
//! evaluates it without branches into one bit per flow.
use knhk_sys as sys;

/// Comparison operators (`regs[lhs] OP rhs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GuardOp {
    /// `==`
    Eq = sys::KNHK_GUARD_EQ as u8,
    /// `!=`
    Ne = sys::KNHK_GUARD_NE as u8,
    /// `<`
    Lt = sys::KNHK_GUARD_LT as u8,
    /// `<=`
    Le = sys::KNHK_GUARD_LE as u8,
    /// `>`
    Gt = sys::KNHK_GUARD_GT as u8,
    /// `>=`
    Ge = sys::KNHK_GUARD_GE as u8,
    /// `(lhs & rhs) != 0`
    Bit = sys::KNHK_GUARD_BIT as u8,
    /// always true
    True = sys::KNHK_GUARD_TRUE as u8,
    /// always false
    False = sys::KNHK_GUARD_FALSE as u8,
    /// `(lhs & rhs) == 0`
    NBit = sys::KNHK_GUARD_NBIT as u8,
}

impl GuardOp {
    /// The operator that is true exactly when `self` is false.
    pub fn negate(self) -> GuardOp {
        use GuardOp::*;
        match self {
            Eq => Ne,
            Ne => Eq,
            Lt => Ge,
            Le => Gt,
            Gt => Le,
            Ge => Lt,
            Bit => NBit,
            NBit => Bit,
            True => False,
            False => True,
        }
    }
}

/// The right-hand operand of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A constant.
    Const(i64),
    /// A case register, `< REGISTERS`.
    Reg(u8),
}

/// One comparison `regs[lhs] op rhs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Term {
    /// The operator.
    pub op: GuardOp,
    /// Left register, `< REGISTERS`.
    pub lhs: u8,
    /// Right operand.
    pub rhs: Operand,
}

impl Term {
    /// A term that is always true.
    pub const TRUE: Term = Term {
        op: GuardOp::True,
        lhs: 0,
        rhs: Operand::Const(0),
    };
    /// A term that is always false.
    pub const FALSE: Term = Term {
        op: GuardOp::False,
        lhs: 0,
        rhs: Operand::Const(0),
    };

    /// `regs[lhs] op constant`.
    pub fn constant(lhs: u8, op: GuardOp, constant: i64) -> Term {
        Term {
            op,
            lhs,
            rhs: Operand::Const(constant),
        }
    }

    /// `regs[lhs] op regs[rhs]`.
    pub fn register(lhs: u8, op: GuardOp, rhs: u8) -> Term {
        Term {
            op,
            lhs,
            rhs: Operand::Reg(rhs),
        }
    }

    /// The term that is true exactly when `self` is false.
    pub fn negate(self) -> Term {
        Term {
            op: self.op.negate(),
            ..self
        }
    }

    fn raw(self) -> sys::knhk_term_t {
        let (rhs_is_reg, rhs_reg, rhs_const) = match self.rhs {
            Operand::Const(k) => (0, 0, k),
            Operand::Reg(r) => (1, r, 0),
        };
        sys::knhk_term_t {
            op: self.op as u8,
            lhs: self.lhs,
            rhs_is_reg,
            rhs_reg,
            reserved: 0,
            rhs_const,
        }
    }
}

/// A guard of at most two terms, combined with AND or OR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// One comparison.
    Term(Term),
    /// Both terms.
    And(Term, Term),
    /// Either term.
    Or(Term, Term),
}

impl Guard {
    /// The guard that is always true.
    pub const ALWAYS: Guard = Guard::Term(Term::TRUE);

    /// The guard that is true exactly when `self` is false (De Morgan).
    pub fn negate(self) -> Guard {
        match self {
            Guard::Term(t) => Guard::Term(t.negate()),
            Guard::And(a, b) => Guard::Or(a.negate(), b.negate()),
            Guard::Or(a, b) => Guard::And(a.negate(), b.negate()),
        }
    }

    pub(crate) fn raw(self) -> sys::knhk_guard_t {
        let (a, b, combine) = match self {
            Guard::Term(t) => (t, Term::TRUE, sys::KNHK_COMBINE_AND),
            Guard::And(a, b) => (a, b, sys::KNHK_COMBINE_AND),
            Guard::Or(a, b) => (a, b, sys::KNHK_COMBINE_OR),
        };
        sys::knhk_guard_t {
            term: [a.raw(), b.raw()],
            combine: combine as u8,
            reserved: [0; 7],
        }
    }
}
