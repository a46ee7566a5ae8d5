//! The XPath predicate compiler: the forms public YAWL files use, compiled into kernel guards.
//!
//! Accepted (see `docs/import.md` for the full table):
//! - a variable `/Net/x`, `/Net/x/text()`, `number(/Net/x)`, `boolean(/Net/x)`, `string(...)`,
//!   `data(...)`, compared (`=`, `!=`, `<`, `<=`, `>`, `>=`, or `eq ne lt le gt ge`) with a
//!   number, a string literal, `true()`/`false()`, or another variable;
//! - `and`, `or`, `not(...)`, `true()`, `false()`, `empty(...)`, `exists(...)`, parentheses;
//! - a bare boolean variable (`/Net/ok`, `boolean(/Net/ok)`) means "its value is true".
//!
//! Negation is pushed down to the comparisons (De Morgan, operator flipping) and constants are
//! folded; what remains must fit the kernel's guard: at most two comparisons combined by one
//! AND or one OR. Strings compare by equality only, through the model's intern table.

use crate::ir::{Guard, GuardOp, Operand, Term, VarType, NEVER};

/// What the compiler needs from the model: variables and the string intern table.
pub trait Scope {
    /// The register and type of variable `name` of net `net`, allocating a register on first
    /// use. Errors name the reason (unknown variable, out of registers).
    fn variable(&mut self, net: &str, name: &str) -> Result<(u8, VarType), String>;
    /// The id of string `s` in the intern table, adding it when new.
    fn intern(&mut self, s: &str) -> i64;
}

/// Longest predicate accepted (characters).
const MAX_LEN: usize = 4096;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// Compiles `expr` into a guard, or says why it cannot.
pub fn compile(expr: &str, scope: &mut dyn Scope) -> Result<Guard, String> {
    if expr.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} characters"));
    }
    let tokens = lex(expr)?;
    let mut p = Parser {
        toks: &tokens,
        pos: 0,
        depth: 0,
    };
    let ast = p.expr()?;
    if p.pos != tokens.len() {
        return Err(format!("unexpected '{}'", tokens[p.pos]));
    }
    let b = to_bool(ast, false, scope)?;
    shape(b)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Slash,
    LParen,
    RParen,
    Comma,
    Op(GuardOp),
    Name(String),
    Num(String),
    Str(String),
    Minus,
    At,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Slash => f.write_str("/"),
            Tok::LParen => f.write_str("("),
            Tok::RParen => f.write_str(")"),
            Tok::Comma => f.write_str(","),
            Tok::Op(op) => write!(f, "{op:?}"),
            Tok::Name(n) => f.write_str(n),
            Tok::Num(n) => f.write_str(n),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Minus => f.write_str("-"),
            Tok::At => f.write_str("@"),
        }
    }
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '/' => {
                out.push(Tok::Slash);
                i += 1
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '@' => {
                out.push(Tok::At);
                i += 1
            }
            '-' => {
                out.push(Tok::Minus);
                i += 1
            }
            '=' => {
                out.push(Tok::Op(GuardOp::Eq));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(GuardOp::Ne));
                i += 2
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('<', false) => GuardOp::Lt,
                    ('<', true) => GuardOp::Le,
                    ('>', false) => GuardOp::Gt,
                    _ => GuardOp::Ge,
                };
                out.push(Tok::Op(op));
                i += if eq { 2 } else { 1 };
            }
            '\'' | '"' => {
                let mut j = i + 1;
                let mut lit = String::new();
                loop {
                    match chars.get(j) {
                        None => return Err("unterminated string literal".into()),
                        Some(&q) if q == c => {
                            // XPath 2 escapes a quote by doubling it.
                            if chars.get(j + 1) == Some(&c) {
                                lit.push(c);
                                j += 2;
                            } else {
                                break;
                            }
                        }
                        Some(&ch) => {
                            lit.push(ch);
                            j += 1
                        }
                    }
                }
                out.push(Tok::Str(lit));
                i = j + 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                out.push(Tok::Num(chars[i..j].iter().collect()));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '-' | '.' | ':'))
                {
                    j += 1;
                }
                let name: String = chars[i..j].iter().collect();
                let tok = match name.as_str() {
                    "eq" => Tok::Op(GuardOp::Eq),
                    "ne" => Tok::Op(GuardOp::Ne),
                    "lt" => Tok::Op(GuardOp::Lt),
                    "le" => Tok::Op(GuardOp::Le),
                    "gt" => Tok::Op(GuardOp::Gt),
                    "ge" => Tok::Op(GuardOp::Ge),
                    _ => Tok::Name(name),
                };
                out.push(tok);
                i = j;
            }
            other => return Err(format!("unexpected character '{other}'")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
struct Path {
    net: String,
    name: String,
    text: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Ast {
    Or(Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Not(Box<Ast>),
    Cmp(Box<Ast>, GuardOp, Box<Ast>),
    Bool(bool),
    Num(String),
    Str(String),
    Var(Path),
    Empty(Path),
    Exists(Path),
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(ref x) if *x == t => Ok(()),
            Some(x) => Err(format!("expected '{t}', found '{x}'")),
            None => Err(format!("expected '{t}' at the end")),
        }
    }
    fn is_name(&self, n: &str) -> bool {
        matches!(self.peek(), Some(Tok::Name(x)) if x == n)
    }

    fn expr(&mut self) -> Result<Ast, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let mut left = self.and()?;
        while self.is_name("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Ast::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Ast, String> {
        let mut left = self.cmp()?;
        while self.is_name("and") {
            self.pos += 1;
            let right = self.cmp()?;
            left = Ast::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Ast, String> {
        let left = self.primary()?;
        if let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let right = self.primary()?;
            if let Some(Tok::Op(_)) = self.peek() {
                return Err("chained comparison".into());
            }
            return Ok(Ast::Cmp(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Ast, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.expr()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Num(n)) => Ok(Ast::Num(n)),
            Some(Tok::Minus) => match self.next() {
                Some(Tok::Num(n)) => Ok(Ast::Num(format!("-{n}"))),
                _ => Err("'-' must precede a number".into()),
            },
            Some(Tok::Str(s)) => Ok(Ast::Str(s)),
            Some(Tok::Slash) => self.path_rest().map(Ast::Var),
            Some(Tok::Name(f)) if self.peek() == Some(&Tok::LParen) => {
                self.pos += 1;
                self.call(&f)
            }
            Some(Tok::Name(n)) => Err(format!(
                "relative path or name '{n}' (variables are written /Net/name)"
            )),
            Some(t) => Err(format!("unexpected '{t}'")),
            None => Err("unexpected end of expression".into()),
        }
    }

    /// After the leading '/': `Net/name` with an optional `/text()`.
    fn path_rest(&mut self) -> Result<Path, String> {
        let net = match self.next() {
            Some(Tok::Name(n)) => n,
            _ => return Err("expected a net name after '/'".into()),
        };
        self.expect(Tok::Slash)?;
        let name = match self.next() {
            Some(Tok::Name(n)) => n,
            Some(Tok::At) => return Err("attributes are not variables".into()),
            _ => return Err(format!("expected a variable name after '/{net}/'")),
        };
        let mut text = false;
        if self.peek() == Some(&Tok::Slash) {
            self.pos += 1;
            match (self.next(), self.next(), self.next()) {
                (Some(Tok::Name(t)), Some(Tok::LParen), Some(Tok::RParen)) if t == "text" => {
                    text = true
                }
                _ => {
                    return Err(format!(
                        "path deeper than /{net}/{name} (complex-typed variables are not compiled)"
                    ))
                }
            }
        }
        if self.peek() == Some(&Tok::Slash) {
            return Err(format!("path deeper than /{net}/{name}"));
        }
        Ok(Path { net, name, text })
    }

    fn call(&mut self, f: &str) -> Result<Ast, String> {
        let r = match f {
            "true" | "false" => Ast::Bool(f == "true"),
            "not" => Ast::Not(Box::new(self.expr()?)),
            "number" | "string" | "data" | "boolean" | "xs:integer" | "xs:int" | "xs:boolean"
            | "xs:string" | "normalize-space" => {
                let inner = self.expr()?;
                match inner {
                    Ast::Var(p) => Ast::Var(p),
                    Ast::Num(n) if f != "boolean" => Ast::Num(n),
                    Ast::Str(s) if f == "string" || f == "data" => Ast::Str(s),
                    Ast::Str(s) if f == "number" => Ast::Num(s),
                    other if f == "boolean" => other,
                    _ => return Err(format!("{f}() of something other than a variable")),
                }
            }
            "empty" | "exists" => {
                let p = match self.next() {
                    Some(Tok::Slash) => self.path_rest()?,
                    _ => return Err(format!("{f}() of something other than a variable")),
                };
                if f == "empty" {
                    Ast::Empty(p)
                } else {
                    Ast::Exists(p)
                }
            }
            other => return Err(format!("function {other}() is not in the compiled subset")),
        };
        self.expect(Tok::RParen)?;
        Ok(r)
    }
}

/// A boolean formula over compiled terms, negation already pushed in.
#[derive(Debug, Clone, PartialEq)]
enum B {
    Const(bool),
    Term(Term),
    And(Vec<B>),
    Or(Vec<B>),
}

/// A value operand after resolution.
enum Val {
    Reg(u8, VarType),
    Int(i64),
    Str(String),
    Bool(bool),
}

fn parse_int(n: &str) -> Result<i64, String> {
    if let Ok(v) = n.trim().parse::<i64>() {
        return Ok(v);
    }
    match n.trim().parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        Ok(_) => Err(format!("non-integer number {n} (registers hold integers)")),
        Err(_) => Err(format!("'{n}' is not a number")),
    }
}

fn value(a: Ast, scope: &mut dyn Scope) -> Result<Val, String> {
    Ok(match a {
        Ast::Var(p) => {
            let (r, t) = scope.variable(&p.net, &p.name)?;
            Val::Reg(r, t)
        }
        Ast::Num(n) => Val::Int(parse_int(&n)?),
        Ast::Str(s) => Val::Str(s),
        Ast::Bool(b) => Val::Bool(b),
        other => return Err(format!("{other:?} used as a value")),
    })
}

/// A constant operand for a register of type `ty`.
fn constant(ty: &VarType, v: Val, scope: &mut dyn Scope) -> Result<i64, String> {
    match (ty, v) {
        (VarType::Int | VarType::Decimal, Val::Int(i)) => Ok(i),
        (VarType::Int | VarType::Decimal, Val::Str(s)) => parse_int(&s),
        (VarType::Bool, Val::Bool(b)) => Ok(i64::from(b)),
        (VarType::Bool, Val::Str(s)) => match s.trim() {
            "true" | "1" => Ok(1),
            "false" | "0" => Ok(0),
            other => Err(format!("'{other}' is not a boolean")),
        },
        (VarType::Bool, Val::Int(i)) => Ok(i64::from(i != 0)),
        (VarType::Str(_), Val::Str(s)) => Ok(scope.intern(&s)),
        (VarType::Str(_), Val::Int(i)) => Ok(scope.intern(&i.to_string())),
        (VarType::Str(_), Val::Bool(b)) => Ok(scope.intern(if b { "true" } else { "false" })),
        (VarType::Int | VarType::Decimal, Val::Bool(b)) => Ok(i64::from(b)),
        (_, Val::Reg(..)) => Err("internal: register as constant".into()),
    }
}

/// The operator with its operands swapped (`a < b` is `b > a`).
fn mirror(op: GuardOp) -> GuardOp {
    match op {
        GuardOp::Lt => GuardOp::Gt,
        GuardOp::Le => GuardOp::Ge,
        GuardOp::Gt => GuardOp::Lt,
        GuardOp::Ge => GuardOp::Le,
        other => other,
    }
}

/// Compile-time folding of a comparison between two literals (`1 = 1`, `'a' != 'b'`): no
/// register is involved, so the result is a constant guard. Guards over registers are
/// evaluated only by libknhk.
fn fold_literal_comparison(a: &Val, op: GuardOp, b: &Val) -> Result<bool, String> {
    let (x, y) = match (a, b) {
        (Val::Int(x), Val::Int(y)) => (*x, *y),
        (Val::Bool(x), Val::Bool(y)) => (i64::from(*x), i64::from(*y)),
        (Val::Str(x), Val::Str(y)) if matches!(op, GuardOp::Eq | GuardOp::Ne) => {
            return Ok((x == y) == (op == GuardOp::Eq));
        }
        _ => return Err("comparison of literals of different kinds".into()),
    };
    Ok(match op {
        GuardOp::Eq => x == y,
        GuardOp::Ne => x != y,
        GuardOp::Lt => x < y,
        GuardOp::Le => x <= y,
        GuardOp::Gt => x > y,
        GuardOp::Ge => x >= y,
        GuardOp::Bit => x & y != 0,
        GuardOp::NBit => x & y == 0,
        GuardOp::True => true,
        GuardOp::False => false,
    })
}

fn is_str(t: &VarType) -> bool {
    matches!(t, VarType::Str(_))
}

fn comparison(l: Ast, op: GuardOp, r: Ast, neg: bool, scope: &mut dyn Scope) -> Result<B, String> {
    let op = if neg { op.negate() } else { op };
    let lv = value(l, scope)?;
    let rv = value(r, scope)?;
    let (reg, ty, op, other) = match (lv, rv) {
        (Val::Reg(a, ta), Val::Reg(b, tb)) => {
            if is_str(&ta) != is_str(&tb) {
                return Err("comparison of a string variable with a non-string variable".into());
            }
            if is_str(&ta) && !matches!(op, GuardOp::Eq | GuardOp::Ne) {
                return Err("strings compare by equality only".into());
            }
            return Ok(B::Term(Term {
                op,
                lhs: a,
                rhs: Operand::Reg(b),
            }));
        }
        (Val::Reg(a, ta), other) => (a, ta, op, other),
        (other, Val::Reg(b, tb)) => (b, tb, mirror(op), other),
        (a, b) => return Ok(B::Const(fold_literal_comparison(&a, op, &b)?)),
    };
    if is_str(&ty) && !matches!(op, GuardOp::Eq | GuardOp::Ne) {
        return Err("strings compare by equality only".into());
    }
    let c = constant(&ty, other, scope)?;
    Ok(B::Term(Term {
        op,
        lhs: reg,
        rhs: Operand::Const(c),
    }))
}

/// Truth of a path used as a boolean: a boolean variable's value; a string's non-emptiness;
/// a number's non-zero-ness.
fn truth(p: Path, neg: bool, scope: &mut dyn Scope) -> Result<B, String> {
    let (r, _t) = scope.variable(&p.net, &p.name)?;
    let op = if neg { GuardOp::Eq } else { GuardOp::Ne };
    // Booleans hold 0/1, strings hold their intern id with "" = 0, numbers themselves.
    Ok(B::Term(Term {
        op,
        lhs: r,
        rhs: Operand::Const(0),
    }))
}

fn emptiness(p: Path, want_empty: bool, scope: &mut dyn Scope) -> Result<B, String> {
    let (r, t) = scope.variable(&p.net, &p.name)?;
    if is_str(&t) {
        let op = if want_empty { GuardOp::Eq } else { GuardOp::Ne };
        Ok(B::Term(Term {
            op,
            lhs: r,
            rhs: Operand::Const(0),
        }))
    } else {
        // A declared, typed variable always has a value.
        Ok(B::Const(!want_empty))
    }
}

fn to_bool(a: Ast, neg: bool, scope: &mut dyn Scope) -> Result<B, String> {
    Ok(match a {
        Ast::Bool(b) => B::Const(b != neg),
        Ast::Not(inner) => to_bool(*inner, !neg, scope)?,
        Ast::And(x, y) => {
            let (x, y) = (to_bool(*x, neg, scope)?, to_bool(*y, neg, scope)?);
            if neg {
                B::Or(vec![x, y])
            } else {
                B::And(vec![x, y])
            }
        }
        Ast::Or(x, y) => {
            let (x, y) = (to_bool(*x, neg, scope)?, to_bool(*y, neg, scope)?);
            if neg {
                B::And(vec![x, y])
            } else {
                B::Or(vec![x, y])
            }
        }
        Ast::Cmp(l, op, r) => {
            // A boolean sub-expression compared with true()/false() (e.g. `(x > 1) = true()`).
            let l_is_bool = matches!(*l, Ast::Cmp(..) | Ast::And(..) | Ast::Or(..) | Ast::Not(_));
            let r_is_bool = matches!(*r, Ast::Cmp(..) | Ast::And(..) | Ast::Or(..) | Ast::Not(_));
            if l_is_bool || r_is_bool {
                let (e, lit) = if l_is_bool { (*l, *r) } else { (*r, *l) };
                let lit = match lit {
                    Ast::Bool(b) => b,
                    _ => return Err("boolean expression compared with a non-boolean".into()),
                };
                let keep = match op {
                    GuardOp::Eq => lit,
                    GuardOp::Ne => !lit,
                    _ => return Err("ordering comparison of booleans".into()),
                };
                to_bool(e, neg == keep, scope)?
            } else {
                comparison(*l, op, *r, neg, scope)?
            }
        }
        Ast::Var(p) => truth(p, neg, scope)?,
        Ast::Empty(p) => emptiness(p, !neg, scope)?,
        Ast::Exists(p) => emptiness(p, neg, scope)?,
        Ast::Num(n) => B::Const((parse_int(&n)? != 0) != neg),
        Ast::Str(s) => B::Const(s.is_empty() == neg),
    })
}

/// Folds constants and flattens nested AND/OR.
fn simplify(b: B) -> B {
    match b {
        B::And(xs) | B::Or(xs) if xs.is_empty() => B::Const(true),
        B::And(xs) => {
            let mut out = Vec::new();
            for x in xs.into_iter().map(simplify) {
                match x {
                    B::Const(true) => {}
                    B::Const(false) => return B::Const(false),
                    B::And(ys) => out.extend(ys),
                    other => out.push(other),
                }
            }
            dedup(&mut out);
            match out.len() {
                0 => B::Const(true),
                1 => out.pop().unwrap_or(B::Const(true)),
                _ => B::And(out),
            }
        }
        B::Or(xs) => {
            let mut out = Vec::new();
            for x in xs.into_iter().map(simplify) {
                match x {
                    B::Const(false) => {}
                    B::Const(true) => return B::Const(true),
                    B::Or(ys) => out.extend(ys),
                    other => out.push(other),
                }
            }
            dedup(&mut out);
            match out.len() {
                0 => B::Const(false),
                1 => out.pop().unwrap_or(B::Const(false)),
                _ => B::Or(out),
            }
        }
        other => other,
    }
}

fn dedup(v: &mut Vec<B>) {
    let mut out: Vec<B> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

fn count_terms(b: &B) -> usize {
    match b {
        B::Const(_) => 0,
        B::Term(_) => 1,
        B::And(xs) | B::Or(xs) => xs.iter().map(count_terms).sum(),
    }
}

/// Fits a formula into the kernel's guard: one or two terms.
fn shape(b: B) -> Result<Guard, String> {
    let b = simplify(b);
    let n = count_terms(&b);
    match b {
        B::Const(true) => Ok(Guard::ALWAYS),
        B::Const(false) => Ok(NEVER),
        B::Term(t) => Ok(Guard::Term(t)),
        B::And(xs) | B::Or(xs) if n > 2 || xs.len() > 2 => Err(format!(
            "needs {n} comparisons; a kernel guard holds two combined by one AND or OR"
        )),
        B::And(xs) => match xs.as_slice() {
            [B::Term(a), B::Term(b)] => Ok(Guard::And(*a, *b)),
            _ => Err("mixes AND and OR; a kernel guard combines two terms one way".into()),
        },
        B::Or(xs) => match xs.as_slice() {
            [B::Term(a), B::Term(b)] => Ok(Guard::Or(*a, *b)),
            _ => Err("mixes AND and OR; a kernel guard combines two terms one way".into()),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use knhk_kernel::{Case, Join, Net, Split};

    struct S {
        vars: Vec<(String, VarType)>,
        strings: Vec<String>,
    }
    impl Scope for S {
        fn variable(&mut self, net: &str, name: &str) -> Result<(u8, VarType), String> {
            if net != "Net" {
                return Err(format!("unknown variable /{net}/{name}"));
            }
            self.vars
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| (i as u8, self.vars[i].1.clone()))
                .ok_or_else(|| format!("unknown variable /{net}/{name}"))
        }
        fn intern(&mut self, s: &str) -> i64 {
            if let Some(i) = self.strings.iter().position(|x| x == s) {
                return i as i64;
            }
            self.strings.push(s.into());
            (self.strings.len() - 1) as i64
        }
    }
    fn scope() -> S {
        S {
            vars: vec![
                ("c".into(), VarType::Int),
                ("d".into(), VarType::Int),
                ("s".into(), VarType::Str("string".into())),
                ("ok".into(), VarType::Bool),
            ],
            strings: vec![String::new()],
        }
    }
    fn g(e: &str) -> Result<Guard, String> {
        compile(e, &mut scope())
    }
    /// Whether libknhk takes a flow guarded by `guard` with these registers: a net
    /// `i -> split -> {yes (guarded), no (default)} -> ... -> o`, fired once.
    fn takes(guard: &Guard, regs: &[i64]) -> bool {
        let mut net = Box::new(Net::new());
        let [i, yes, no, o] = [(); 4].map(|()| net.add_condition().unwrap());
        let split = net.add_task(Join::Xor, Split::Xor).unwrap();
        net.set_input(i).unwrap();
        net.set_output(o).unwrap();
        net.input_flow(i, split).unwrap();
        net.output_flow(split, yes, Some(guard), false).unwrap();
        net.output_flow(split, no, None, true).unwrap();
        for c in [yes, no] {
            let t = net.add_task(Join::Xor, Split::And).unwrap();
            net.input_flow(c, t).unwrap();
            net.output_flow(t, o, None, false).unwrap();
        }
        net.seal().unwrap_or_else(|e| panic!("{guard:?}: {e:?}"));
        let mut case = Case::new(&net).unwrap();
        case.regs_mut()[..regs.len()].copy_from_slice(regs);
        net.fire(&mut case, split).unwrap();
        case.marking() & (1 << yes) != 0
    }
    fn ev(e: &str, regs: &[i64]) -> bool {
        takes(&g(e).unwrap_or_else(|err| panic!("{e}: {err}")), regs)
    }

    #[test]
    fn corpus_forms() {
        assert!(ev("/Net/c<=10", &[10]));
        assert!(!ev("/Net/c<=10", &[11]));
        assert!(ev("/Net/c>10", &[11]));
        assert!(ev(
            "number(/Net/cond/text())>10".replace("cond", "c").as_str(),
            &[11]
        ));
        assert!(ev("/Net/c=0", &[0]));
        assert_eq!(g("true()"), Ok(Guard::ALWAYS));
        assert_eq!(g("false()"), Ok(NEVER));
    }

    #[test]
    fn literal_on_the_left_is_mirrored() {
        assert!(ev("10 < /Net/c", &[11]));
        assert!(!ev("10 < /Net/c", &[10]));
    }

    #[test]
    fn negation_and_de_morgan() {
        let regs = [5, 7];
        assert!(ev("not(/Net/c > 5)", &regs));
        assert!(ev("not(/Net/c > 5 or /Net/d < 7)", &regs));
        assert!(!ev("not(/Net/c = 5 and /Net/d = 7)", &regs));
        assert!(ev("/Net/c = 5 and /Net/d = 7", &regs));
        assert!(ev("/Net/c = 1 or /Net/d = 7", &regs));
        assert!(ev("/Net/c = /Net/d or false()", &[3, 3]));
        assert!(ev("/Net/c != /Net/d", &[3, 4]));
    }

    #[test]
    fn strings_are_interned() {
        let mut s = scope();
        let gd = compile("/Net/s = 'yes'", &mut s).unwrap();
        let id = s.strings.iter().position(|x| x == "yes").unwrap() as i64;
        assert!(takes(&gd, &[0, 0, id]));
        assert!(!takes(&gd, &[0, 0, 0]));
        assert!(compile("/Net/s < 'yes'", &mut s).is_err());
        let e = compile("empty(/Net/s/text())", &mut s).unwrap();
        assert!(takes(&e, &[0, 0, 0]));
        assert!(!takes(&e, &[0, 0, id]));
        let x = compile("exists(/Net/s)", &mut s).unwrap();
        assert!(takes(&x, &[0, 0, id]));
        assert_eq!(compile("exists(/Net/c)", &mut s), Ok(Guard::ALWAYS));
    }

    #[test]
    fn booleans() {
        assert!(ev("/Net/ok = 'true'", &[0, 0, 0, 1]));
        assert!(ev("boolean(/Net/ok)", &[0, 0, 0, 1]));
        assert!(!ev("/Net/ok", &[0, 0, 0, 0]));
        assert!(ev("/Net/ok = false()", &[0, 0, 0, 0]));
        assert!(ev("(/Net/c > 1) = true()", &[2]));
        assert!(ev("(/Net/c > 1) = false()", &[0]));
    }

    #[test]
    fn refusals_say_why() {
        let e = g("/Net/c > 1 and /Net/d > 1 and /Net/c < 9").unwrap_err();
        assert!(e.contains("needs 3 comparisons"), "{e}");
        assert!(g("(/Net/c > 1 and /Net/d > 1) or /Net/c = 0").is_err());
        assert!(g("count(/Net/c) > 1").unwrap_err().contains("count"));
        assert!(g("/Net/zz = 1").unwrap_err().contains("unknown variable"));
        assert!(g("/Net/c > 1.5").unwrap_err().contains("non-integer"));
        assert!(g("/Net/c >").is_err());
        assert!(g("'abc").is_err());
        assert!(g("/Net/c/x/y = 1").is_err());
        assert!(g(&"(".repeat(100)).is_err());
    }

    #[test]
    fn constants_fold() {
        assert_eq!(g("1 = 1"), Ok(Guard::ALWAYS));
        assert_eq!(g("/Net/c = 1 and false()"), Ok(NEVER));
        assert_eq!(g("/Net/c = 1 or true()"), Ok(Guard::ALWAYS));
        assert!(ev("/Net/c eq 4", &[4]));
    }
}
