# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""PostgreSQL plans for auditlog.ops.pg_statements: EXPLAIN (VERBOSE, FORMAT JSON) read, told in
one line, and the index a plan misses suggested. Pure functions (tests/unit/test_pg_statements_module.py).

What counts as a missing index: a Seq Scan on a table of at least `min_table_rows` rows whose
Filter has plain comparisons of the table's own columns with a parameter, a constant or a stable
expression (``col = $1``, ``col > now() - $1``, ``col = ANY ($1)``, ``col IS NULL``, ...), that keeps
few of its rows (the planner's estimate at most `max_selectivity` of them), and whose columns no
valid index of the table leads with. The columns: those compared for equality first (as the filter
names them, at most three), then one compared by range.

A Seq Scan on a partition (under an Append) is a scan of its partitioned table: the index is
suggested on the partitioned table (the root of the tree), once for all its partitions, and built
as `create_steps` says: CREATE INDEX CONCURRENTLY is not possible on a partitioned table.
"""

import hashlib
import json
import re

NAMEDATALEN = 64  # PostgreSQL's identifiers are at most NAMEDATALEN - 1 bytes
MAX_COLUMNS = 3

# Keywords that are not plain identifiers (reserved, and those that cannot name a column or a
# function unquoted): quoted when they name a table, a column or an index.
_KEYWORDS_TEXT = """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast check
    collate collation column concurrently constraint create cross current_catalog current_date
    current_role current_schema current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign freeze from full grant group having ilike in
    initially inner intersect into is isnull join lateral leading left like limit localtime
    localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
    references returning right select session_user similar some symmetric system_user table
    tablesample then to trailing true union unique user using variadic verbose when where window
    with
"""
_KEYWORDS = frozenset(_KEYWORDS_TEXT.split())
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*\Z")


def quote_ident(name):
    """An identifier as SQL must spell it (PostgreSQL's quote_ident)."""
    name = str(name)
    if _PLAIN_IDENT.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema, name):
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def index_name(table, columns, suffix=""):
    """PostgreSQL's own choice for CREATE INDEX without a name: <table>_<col>_<col>_idx, cut to
    63 bytes; a name that had to be cut ends in 8 hex digits of the whole, so that two long names
    stay apart."""
    name = "_".join([table, *columns, "idx"]) + suffix
    if len(name.encode("utf-8")) < NAMEDATALEN:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]  # noqa: S324 - a name, not a secret
    head = name.encode("utf-8")[: NAMEDATALEN - 1 - 9].decode("utf-8", "ignore")
    return f"{head}_{digest}"


# -- reading plans ---------------------------------------------------------------------------------


def load(explain_output):
    """EXPLAIN (FORMAT JSON)'s one value (text, or already parsed) -> the top plan node."""
    data = json.loads(explain_output) if isinstance(explain_output, (str, bytes)) else explain_output
    if isinstance(data, list):
        data = data[0] if data else {}
    return data.get("Plan", data) if isinstance(data, dict) else {}


def walk(plan, processes=1):
    """Every node of the plan with the number of processes it runs in (the Gather's workers and
    the leader for a parallel node, 1 otherwise): a parallel node's Plan Rows are per process."""
    if not isinstance(plan, dict):
        return
    yield plan, processes if plan.get("Parallel Aware") else 1
    inner = processes
    if plan.get("Node Type") in ("Gather", "Gather Merge"):
        inner = int(plan.get("Workers Planned") or 0) + 1
    for child in plan.get("Plans") or []:
        yield from walk(child, inner)


SCAN_KEYS = (
    ("Index Name", "index"),
    ("Index Cond", "index_cond"),
    ("Recheck Cond", "recheck_cond"),
    ("Filter", "filter"),
)


def scans(plan):
    """The plan's scans of tables: node, schema, relation, alias, index, conditions, estimated rows."""
    out = []
    for node, processes in walk(plan):
        if "Relation Name" not in node:
            continue
        scan = {
            "node": node.get("Node Type"),
            "schema": node.get("Schema"),
            "relation": node["Relation Name"],
            "alias": node.get("Alias") or node["Relation Name"],
            "rows": round(float(node.get("Plan Rows") or 0) * processes),
        }
        for key, name in SCAN_KEYS:
            if node.get(key):
                scan[name] = node[key]
        out.append(scan)
    return out


def _describe(scan):
    where = f"{scan['schema']}.{scan['relation']}" if scan.get("schema") else scan["relation"]
    text = "{}{} on {}".format(scan["node"], f" using {scan['index']}" if scan.get("index") else "", where)
    for key, label in (("index_cond", "cond"), ("filter", "filter")):
        if scan.get(key):
            text += f" ({label} {scan[key]})"
    return text


def summary(plan, max_scans=6):
    """What a person reads of a plan: the top node, its cost and rows, the scans, and one line."""
    found = scans(plan)
    nodes = [n.get("Node Type") for n, _ in walk(plan)]
    line = "{} (cost {}, rows {})".format(
        plan.get("Node Type"), plan.get("Total Cost"), plan.get("Plan Rows")
    )
    if found:
        line += ": " + "; ".join(_describe(s) for s in found[:max_scans])
        if len(found) > max_scans:
            line += f"; and {len(found) - max_scans} more scans"
    return {
        "node": plan.get("Node Type"),
        "total_cost": plan.get("Total Cost"),
        "rows": plan.get("Plan Rows"),
        "seq_scans": sum(1 for s in found if s["node"] == "Seq Scan"),
        "index_scans": sum(1 for s in found if s.get("index")),
        "nodes": sorted(set(n for n in nodes if n)),
        "scans": found,
        "text": line,
    }


# -- filters ----------------------------------------------------------------------------------------


def _strip_parens(text):
    """Text without the parentheses that enclose all of it."""
    text = text.strip()
    while text.startswith("(") and _closing(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    return text


def _unquoted(text, start=0):
    """(index, character, depth) of each character of `text` from `start` that is outside quoted
    text ('...' or "...", a doubled quote inside), depth counting the parentheses open around it
    (a parenthesis counts as outside itself)."""
    depth, i, quote = 0, start, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                if i + 1 < len(text) and text[i + 1] == quote:
                    i += 1
                else:
                    quote = None
        elif ch in "'\"":
            quote = ch
        else:
            if ch == ")":
                depth -= 1
            yield i, ch, depth
            if ch == "(":
                depth += 1
        i += 1


def _closing(text, start):
    """The index of the parenthesis that closes the one at `start` (quotes skipped), or -1."""
    for i, ch, depth in _unquoted(text, start):
        if ch == ")" and depth == 0:
            return i
    return -1


def conjuncts(expression):
    """The parts of an expression joined by AND at its top level (an OR is one part)."""
    text = _strip_parens(expression or "")
    if not text:
        return []
    parts, start = [], 0
    for i, _ch, depth in _unquoted(text):
        if i >= start and depth == 0 and text.startswith(" AND ", i):
            parts.append(text[start:i])
            start = i + 5
    parts.append(text[start:])
    return [_strip_parens(p) for p in parts if p.strip()]


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_OPS = ("<=", ">=", "=", "<", ">")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "="}


def _unquote(ident):
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def _column(text, alias):
    """The column name when text is the alias's plain column (perhaps cast: ``(t.col)::text``)."""
    text = _strip_parens(text)
    cast = re.fullmatch(r"\((.+)\)::[\w\s\[\]\".]+", text)
    if cast:
        text = _strip_parens(cast.group(1))
    m = re.fullmatch(rf"({_IDENT})\.({_IDENT})", text)
    if m and _unquote(m.group(1)) == alias:
        return _unquote(m.group(2))
    return None


def _free_of_columns(text, alias):
    """Whether text names none of the alias's columns (a parameter, a constant, now() - $1...):
    in EXPLAIN VERBOSE every column is named with its table's alias."""
    quoted = re.escape(quote_ident(alias))
    without_strings = re.sub(r"'(?:[^']|'')*'", "''", text)
    return not re.search(rf"(?<![\w$\"]){quoted}\.", without_strings) and "SubPlan" not in without_strings


def comparison(part, alias):
    """('eq' | 'range', column) for a plain comparison of one of the alias's columns, else None."""
    text = _strip_parens(part)
    m = re.fullmatch(r"(.+?)\s+IS\s+NULL", text)
    if m:
        column = _column(m.group(1), alias)
        return ("eq", column) if column else None
    m = re.fullmatch(r"(.+?)\s+=\s+ANY\s+(\(.+\))", text)
    if m:
        column = _column(m.group(1), alias)
        return ("eq", column) if column and _free_of_columns(m.group(2), alias) else None
    depth, quote = 0, None
    for i, ch in enumerate(text):  # the first operator at the top level, surrounded by spaces
        if quote:
            quote = None if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == " ":
            for op in _OPS:
                if text.startswith(f" {op} ", i):
                    left, right = text[:i], text[i + len(op) + 2 :]
                    for side, other, flipped in ((left, right, op), (right, left, _FLIP[op])):
                        column = _column(side, alias)
                        if column and _free_of_columns(other, alias):
                            return ("eq" if flipped == "=" else "range", column)
                    return None
    return None


def filter_columns(expression, alias):
    """The alias's columns an expression compares plainly, {'eq': [...], 'range': [...]}, each in
    the order the expression names them; the rest of it (functions, OR, LIKE...) is left out."""
    eq, rng = [], []
    for part in conjuncts(expression):
        found = comparison(part, alias)
        if not found:
            continue
        kind, column = found
        target = eq if kind == "eq" else rng
        if column not in target:
            target.append(column)
    return {"eq": eq, "range": [c for c in rng if c not in eq]}


def index_columns(found):
    """The columns of the index for filter_columns' result: equality first, then one range."""
    columns = found["eq"][:MAX_COLUMNS]
    if found["range"] and len(columns) < MAX_COLUMNS:
        columns.append(found["range"][0])
    return columns


# -- suggestions --------------------------------------------------------------------------------------


def _leading(indexes):
    """The first key column of each valid, complete (not partial) index: {column: index name}."""
    out = {}
    for ix in indexes or []:
        columns = ix.get("columns") or []
        if ix.get("valid") and not ix.get("partial") and columns and columns[0]:
            out.setdefault(columns[0], ix["name"])
    return out


def suggest(plan, catalog, min_table_rows=10000, max_selectivity=0.1):
    """The indexes the plan misses, and why each other Seq Scan got none.

    catalog: {(schema, relation): {"kind": "r" | "p" | ..., "rows": n, "root": (schema, name) or
    None, "indexes": [{"name", "columns", "valid", "partial"}]}}, for every relation the plan
    scans and for the root of each partition (its rows: its partitions' rows).
    Returns (suggestions, notes): each suggestion {schema, table, columns, partitioned, scans
    (the relations seen scanned), rows, estimated_rows}; notes are one line each.
    """
    found, notes = {}, []
    for scan in scans(plan):
        if scan["node"] != "Seq Scan" or not scan.get("filter"):
            continue
        where = f"{scan['schema']}.{scan['relation']}"
        rel = catalog.get((scan["schema"], scan["relation"]))
        if rel is None:
            notes.append(f"{where}: not found in the catalog")
            continue
        compared = filter_columns(scan["filter"], scan["alias"])
        columns = index_columns(compared)
        if not columns:
            notes.append(f"{where}: the filter {scan['filter']} compares no plain column")
            continue
        target = tuple(rel["root"]) if rel.get("root") else (scan["schema"], scan["relation"])
        info = catalog.get(target, rel)
        if info.get("kind") not in ("r", "p", "m"):
            notes.append(f"{where}: a {info.get('kind')} relation takes no index here")
            continue
        if (info.get("rows") or 0) < min_table_rows:
            notes.append(
                "{}.{}: {} rows, under {}: a scan is cheap".format(*target, info.get("rows"), min_table_rows)
            )
            continue
        rows = rel.get("rows") or 0
        if not rows:
            continue  # an empty table (or partition): its scan costs nothing
        if scan["rows"] > max_selectivity * rows:
            notes.append(
                f"{where}: the filter keeps about {scan['rows']} of {rows} rows: an index would not help"
            )
            continue
        # An index that leads with a column compared for equality (or with the range column, when
        # none is) serves the filter already: the planner chose the scan for another reason.
        leading = {**_leading(rel.get("indexes")), **_leading(info.get("indexes"))}
        covering = [(c, leading[c]) for c in (compared["eq"] or columns[:1]) if c in leading]
        if covering:
            notes.append(
                "{}.{}: index {} leads with {}, yet the planner scans: its statistics (ANALYZE), or"
                " the filter keeps too many rows".format(*target, covering[0][1], covering[0][0])
            )
            continue
        key = (target, tuple(columns))
        s = found.setdefault(
            key,
            {
                "schema": target[0],
                "table": target[1],
                "columns": list(columns),
                "partitioned": info.get("kind") == "p",
                "scans": [],
                "rows": info.get("rows"),
                "estimated_rows": 0,
            },
        )
        if where not in s["scans"]:
            s["scans"].append(where)
        s["estimated_rows"] += scan["rows"]
    return list(found.values()), notes


def suggestion_sql(suggestion, name, steps=None):
    """The SQL that makes the suggested index: CREATE INDEX CONCURRENTLY for a table, and the
    steps of create_steps, joined, for a partitioned table."""
    if suggestion.get("partitioned"):
        return "; ".join(step["sql"] for step in steps or create_steps(suggestion, name))
    target = qualified(suggestion["schema"], suggestion["table"])
    columns = ", ".join(quote_ident(c) for c in suggestion["columns"])
    return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(name)} ON {target} ({columns})"


def create_steps(suggestion, name, tree=None, child_names=None, drop_first=()):
    """The statements that build the suggested index without blocking the table's writes.

    A table: CREATE INDEX CONCURRENTLY IF NOT EXISTS (one statement, outside a transaction).

    A partitioned table (CREATE INDEX CONCURRENTLY refuses one, and a plain CREATE INDEX on it
    holds a SHARE lock on every partition, blocking every insert, until all are built):
      1. CREATE INDEX IF NOT EXISTS ... ON ONLY <table>: the partitioned index alone, invalid,
         in the catalog only (a moment's SHARE lock on the table, no build);
      2. for each partitioned child, the same ON ONLY, top down;
      3. for each partition, CREATE INDEX CONCURRENTLY IF NOT EXISTS (its writes go on);
      4. ALTER INDEX <parent's index> ATTACH PARTITION <child's index>, bottom up: once every
         partition's index is attached, PostgreSQL marks the partitioned index valid. Partitions
         made later (the worker makes a month ahead) get the index from then on.
    Each statement is idempotent (IF NOT EXISTS; attaching an index already attached does nothing),
    so a run that stopped half way is finished by the next.

    tree: [{"schema", "name", "parent": (schema, name), "leaf": bool, "level": n}] below the
    table (each partition and partitioned child, with its parent, top down);
    child_names: {(schema, name): index name}.
    drop_first: [(schema, index name)], INVALID indexes of the names these steps make (a failed
    concurrent build of an earlier run), dropped first (DROP INDEX CONCURRENTLY) to be built anew.
    Returns [{"sql", "concurrently", "relation", "index"}]; "concurrently" marks the builds.
    """
    drops = [
        {
            "sql": f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(*index)}",
            "concurrently": False,
            "relation": None,
            "index": tuple(index),
        }
        for index in drop_first
    ]
    columns = ", ".join(quote_ident(c) for c in suggestion["columns"])
    root = (suggestion["schema"], suggestion["table"])
    if not suggestion.get("partitioned"):
        target = qualified(*root)
        return drops + [
            {
                "sql": f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(name)} ON {target} ({columns})",
                "concurrently": True,
                "relation": root,
                "index": (root[0], name),
            }
        ]
    names = dict(child_names or {})
    names[root] = name
    tree = list(tree or [])
    steps = drops + [
        {
            "sql": f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON ONLY {qualified(*root)} ({columns})",
            "concurrently": False,
            "relation": root,
            "index": (root[0], name),
        }
    ]
    for node in tree:
        rel = (node["schema"], node["name"])
        own = names.get(rel) or index_name(node["name"], suggestion["columns"])
        names[rel] = own
        if not node.get("leaf"):
            sql = f"CREATE INDEX IF NOT EXISTS {quote_ident(own)} ON ONLY {qualified(*rel)} ({columns})"
            steps.append(
                {
                    "sql": sql,
                    "concurrently": False,
                    "relation": rel,
                    "index": (rel[0], own),
                }
            )
    for node in tree:
        if node.get("leaf"):
            rel = (node["schema"], node["name"])
            steps.append(
                {
                    "sql": f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(names[rel])}"
                    f" ON {qualified(*rel)} ({columns})",
                    "concurrently": True,
                    "relation": rel,
                    "index": (rel[0], names[rel]),
                }
            )
    for node in sorted(tree, key=lambda n: -int(n.get("level") or 1)):
        rel, parent = (node["schema"], node["name"]), tuple(node["parent"])
        steps.append(
            {
                "sql": f"ALTER INDEX {qualified(parent[0], names[parent])}"
                f" ATTACH PARTITION {qualified(rel[0], names[rel])}",
                "concurrently": False,
                "relation": rel,
                "index": (rel[0], names[rel]),
            }
        )
    return steps


# -- statements ---------------------------------------------------------------------------------------

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|INTO|TRUNCATE|COPY|CALL|DO)\b", re.I)


def _code(query):
    """The query without its comments and string literals (for the checks below)."""
    text = re.sub(r"'(?:[^']|'')*'", "''", query or "")
    text = re.sub(r"\$([A-Za-z_]\w*)?\$.*?\$\1\$", "''", text, flags=re.S)
    return _COMMENTS.sub(" ", text)


def plannable(query):
    """None when the statement is a read EXPLAIN may plan, else why not.

    Only SELECT and WITH ... SELECT: never a statement that writes (nor one with a
    data-modifying WITH or SELECT INTO), never a utility statement, and one statement only, so
    that nothing but EXPLAIN runs.
    """
    body = _code(query).strip().rstrip("; \t\n")
    if not body:
        return "no query text (insufficient privilege?)"
    # Any semicolon but the last, even in a string or a comment: the text is sent as it is, and a
    # second statement must never ride along with the EXPLAIN.
    if ";" in (query or "").strip().rstrip("; \t\n"):
        return "more than one statement in the text"
    first = re.match(r"[\s(]*([A-Za-z]+)", body)
    word = first.group(1).upper() if first else ""
    if word not in ("SELECT", "WITH", "VALUES", "TABLE"):
        return f"{word or 'the statement'} is not a read: only SELECT statements are planned"
    if _WRITES.search(body):
        return "it writes (INSERT, UPDATE, DELETE, MERGE or SELECT INTO): only reads are planned"
    return None


# The statements that are queries (reads and writes of rows); the others (DDL, ANALYZE, VACUUM,
# COPY, SET...) are not the slow statements of this procedure. The same pattern works for
# PostgreSQL's ~* (the module's SQL) and Python's re (the unit tests).
QUERY_PATTERN = (
    r"^(\s|\(|/\*([^*]|\*+[^*/])*\*+/|--[^\n]*\n)*"
    r"(select|with|values|table|insert|update|delete|merge)([^a-z0-9_$]|$)"
)


def is_query(text):
    """Whether pg_stat_statements' text is a query (QUERY_PATTERN), not a utility statement."""
    return re.match(QUERY_PATTERN, text or "", re.I) is not None


def parameters(query):
    """The highest $n of a statement's text (pg_stat_statements puts $n for its constants)."""
    numbers = [int(n) for n in re.findall(r"(?<![\w$])\$(\d+)", _code(query))]
    return max(numbers, default=0)


def cut(text, length):
    """A query as one line of at most `length` characters."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= length else text[: max(length - 3, 0)] + "..."
