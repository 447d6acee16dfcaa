"""Full-text search over the event mirror: the index (SQLite FTS5, PostgreSQL tsvector + GIN)
and the ranked query with snippets.

What is indexed: the text blocks of `user.message` and `agent.message` events (what people and
agents said). Tool uses are left out on purpose: their inputs are code and file bodies (a `write`
of a whole file, a long `bash` script) that would dominate the index's size and every ranking,
while a builder looking for a tool call already has it in the session's history.

The index is kept in step by database triggers on `session_events`, so the turn runner's append
path (`store.events.append_events`, one Core executemany) is unchanged and pays only the trigger
(on message events only). Each indexed row carries its session's agent, so a search intersects
the term's postings with the agent's instead of fetching every tenant's matches and filtering
them: SQLite stores the agent as a second FTS5 column, PostgreSQL adds an agent lexeme to the
tsvector (one GIN index serves both). The cost of a search follows the searched agent's size,
not the whole mirror's. (On SQLite, bm25 counts the agent's rows once per search: about 4 ms per
100,000 messages of that agent.)

Ranking is bounded work on any mirror size: the agent's `window` most recent matches are taken
first (newest first, so a common term stops early), then ranked (bm25 / ts_rank), newer first
among equals, and only the final `limit` rows get a snippet. A rare term is ranked over all its
matches and a very common one over its recent matches: "what did this agent say about X
lately", which is what a builder inspecting a running agent asks.

The DDL lives here (`install`) because both the migration 0002 and the test fixture (which builds
the schema with `create_all`) need it; objects are created in the connection's search path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextualSelect, bindparam, text

from store.db import DbSession, is_sqlite
from store.models import UTCDateTime

SEARCHED_TYPES = ("user.message", "agent.message")
MAX_INDEXED_CHARS = 100_000
DEFAULT_WINDOW = 1000
MAX_TERMS = 16
MAX_TERM_CHARS = 100
SNIPPET_START = "**"
SNIPPET_END = "**"
SNIPPET_ELLIPSIS = "…"
SNIPPET_TOKENS = 24
# ts_headline parses the whole text (about 0.25 ms per 1,000 characters): a match past this far
# into a very long message gets the message's start as its snippet.
HEADLINE_CHARS = 20_000

FTS_TABLE = "session_events_fts"
PG_TABLE = "session_event_search"

_TYPES_SQL = ", ".join(f"'{t}'" for t in SEARCHED_TYPES)

# -- SQLite: an FTS5 table (it keeps its own copy of the text, which snippet() needs) -----------

# The text of a message: its string content, or its text blocks joined by newlines. The CASE
# guards keep json_extract away from non-object values (it would raise on a plain string).
_SQLITE_TEXT = f"""substr(CASE json_type(new.data, '$.content')
    WHEN 'text' THEN json_extract(new.data, '$.content')
    WHEN 'array' THEN (
        SELECT group_concat(json_extract(b.value, '$.text'), char(10))
        FROM json_each(new.data, '$.content') AS b
        WHERE CASE WHEN b.type = 'object' THEN json_extract(b.value, '$.type') END = 'text'
    )
END, 1, {MAX_INDEXED_CHARS})"""


def _sqlite_rows(source: str) -> str:
    """Rows for the FTS table from `source`, which names the event `new` and its session `s`."""
    return f"""INSERT INTO {FTS_TABLE} (rowid, body, agent)
    SELECT id, body, agent FROM (
        SELECT new.id AS id, {_SQLITE_TEXT} AS body,
            replace(s.deployed_agent_id, '_', '') AS agent
        {source}
    ) WHERE body IS NOT NULL AND body != ''"""


_SQLITE_INSTALL = (
    f"""CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(
        body, agent, tokenize = 'porter unicode61 remove_diacritics 2'
    )""",
    # The agent column holds the agent id without underscores: one token, not a phrase.
    f"""CREATE TRIGGER session_events_search_insert AFTER INSERT ON session_events
    WHEN new.type IN ({_TYPES_SQL})
    BEGIN
        {_sqlite_rows("FROM agent_sessions AS s WHERE s.id = new.session_id")};
    END""",
    f"""CREATE TRIGGER session_events_search_delete AFTER DELETE ON session_events
    WHEN old.type IN ({_TYPES_SQL})
    BEGIN
        DELETE FROM {FTS_TABLE} WHERE rowid = old.id;
    END""",
)

_SQLITE_BACKFILL = _sqlite_rows(
    "FROM session_events AS new JOIN agent_sessions AS s ON s.id = new.session_id "
    f"WHERE new.type IN ({_TYPES_SQL})"
)

_SQLITE_UNINSTALL = (
    "DROP TRIGGER IF EXISTS session_events_search_delete",
    "DROP TRIGGER IF EXISTS session_events_search_insert",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
)

# -- PostgreSQL: a side table (event -> agent, tsvector) filled by a trigger --------------------

# The document is the text's lexemes plus one for the agent, which no text can produce (it has a
# space): a search ANDs it into the query, so the GIN index intersects the term's postings with
# the agent's instead of fetching every tenant's matches and filtering them.
AGENT_LEXEME_PREFIX = "@agent "
_PG_DOCUMENT = (
    "to_tsvector('english', {body})"
    f" || array_to_tsvector(ARRAY['{AGENT_LEXEME_PREFIX}' || s.deployed_agent_id])"
)

_PG_INSTALL = (
    # A message whose JSON holds \u0000 cannot become text in PostgreSQL: it has no text to
    # index (a warning in the server log) rather than failing the turn's append.
    f"""CREATE FUNCTION session_event_text(data json) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
    BEGIN
        RETURN left(CASE json_typeof(data -> 'content')
            WHEN 'string' THEN data ->> 'content'
            WHEN 'array' THEN (
                SELECT string_agg(b ->> 'text', E'\\n')
                FROM json_array_elements(data -> 'content') AS b
                WHERE json_typeof(b) = 'object' AND b ->> 'type' = 'text'
            )
        END, {MAX_INDEXED_CHARS});
    EXCEPTION WHEN untranslatable_character THEN
        RAISE WARNING 'a session event was not indexed for search: %', SQLERRM;
        RETURN NULL;
    END
    $$""",
    f"""CREATE TABLE {PG_TABLE} (
        event_id bigint PRIMARY KEY REFERENCES session_events (id) ON DELETE CASCADE,
        agent_id varchar(64) NOT NULL,
        document tsvector NOT NULL
    )""",
    f"CREATE INDEX ix_{PG_TABLE}_document ON {PG_TABLE} USING gin (document)",
    f"""CREATE FUNCTION session_events_search_index() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        body text := session_event_text(NEW.data);
    BEGIN
        IF body IS NULL OR body = '' THEN
            RETURN NULL;
        END IF;
        INSERT INTO {PG_TABLE} (event_id, agent_id, document)
        SELECT NEW.id, s.deployed_agent_id, {_PG_DOCUMENT.format(body="body")}
        FROM agent_sessions AS s WHERE s.id = NEW.session_id;
        RETURN NULL;
    END
    $$""",
    f"""CREATE TRIGGER session_events_search AFTER INSERT ON session_events
    FOR EACH ROW WHEN (NEW.type IN ({_TYPES_SQL}))
    EXECUTE FUNCTION session_events_search_index()""",
)

_PG_BACKFILL = f"""INSERT INTO {PG_TABLE} (event_id, agent_id, document)
SELECT e.id, s.deployed_agent_id, {_PG_DOCUMENT.format(body="session_event_text(e.data)")}
FROM session_events AS e JOIN agent_sessions AS s ON s.id = e.session_id
WHERE e.type IN ({_TYPES_SQL}) AND coalesce(session_event_text(e.data), '') != ''"""

_PG_UNINSTALL = (
    "DROP TRIGGER IF EXISTS session_events_search ON session_events",
    "DROP FUNCTION IF EXISTS session_events_search_index()",
    f"DROP TABLE IF EXISTS {PG_TABLE}",
    "DROP FUNCTION IF EXISTS session_event_text(json)",
)

SEARCH_OBJECTS = frozenset({FTS_TABLE, PG_TABLE}) | {
    f"{FTS_TABLE}_{suffix}" for suffix in ("config", "content", "data", "docsize", "idx")
}
"""Tables `install` creates (FTS5 adds its shadow tables): not part of the models."""


def install(conn: Connection, *, backfill: bool = True) -> None:
    """Create the index, its triggers, and index the events already mirrored (a sync connection,
    as `run_sync` and Alembic give)."""
    sqlite = conn.dialect.name == "sqlite"
    for statement in _SQLITE_INSTALL if sqlite else _PG_INSTALL:
        conn.exec_driver_sql(statement)
    if backfill:
        conn.exec_driver_sql(_SQLITE_BACKFILL if sqlite else _PG_BACKFILL)


def uninstall(conn: Connection) -> None:
    for statement in _SQLITE_UNINSTALL if conn.dialect.name == "sqlite" else _PG_UNINSTALL:
        conn.exec_driver_sql(statement)


# -- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A parsed query: every word and every quoted phrase must match (AND)."""

    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: int
    session_id: str
    seq: int
    type: str
    created_at: datetime
    score: float  # higher is better; comparable within one search only
    snippet: str


_PIECE = re.compile(r'"([^"]*)"?|(\w+)')
_WORD = re.compile(r"\w+")


def parse_query(query: str) -> SearchTerms:
    """Words and `"quoted phrases"`; anything else (operators, punctuation) is ignored, so user
    input can never be a syntax error in either database's query language. ValueError when
    nothing searchable is left."""
    words: list[str] = []
    phrases: list[tuple[str, ...]] = []
    for match in _PIECE.finditer(query):
        if len(words) + len(phrases) >= MAX_TERMS:
            break
        quoted, word = match.groups()
        if word is not None:
            words.append(word[:MAX_TERM_CHARS].lower())
            continue
        parts = tuple(w[:MAX_TERM_CHARS].lower() for w in _WORD.findall(quoted or ""))
        if len(parts) == 1:
            words.append(parts[0])
        elif parts:
            phrases.append(parts)
    if not words and not phrases:
        raise ValueError("has no words to search for")
    return SearchTerms(tuple(dict.fromkeys(words)), tuple(dict.fromkeys(phrases)))


def fts5_match(terms: SearchTerms, agent_id: str) -> str:
    """The FTS5 MATCH expression: the agent's rows AND every term in the body (all quoted)."""
    pieces = [f'"{w}"' for w in terms.words] + [f'"{" ".join(p)}"' for p in terms.phrases]
    return f'agent : "{agent_id.replace("_", "")}" AND body : ({" AND ".join(pieces)})'


async def search_events(
    db: DbSession,
    *,
    workspace_id: str,
    agent_id: str,
    terms: SearchTerms,
    limit: int = 20,
    window: int = DEFAULT_WINDOW,
) -> list[SearchHit]:
    """The best `limit` messages of the agent's sessions (in that workspace) matching `terms`,
    ranked among its `window` most recent matches; ties go to the newer event."""
    dialect = "sqlite" if is_sqlite(db) else "postgresql"
    statement, params = search_statement(
        dialect,
        workspace_id=workspace_id,
        agent_id=agent_id,
        terms=terms,
        limit=limit,
        window=window,
    )
    if dialect == "postgresql":
        # A prepared statement's generic plan would not know the terms: plan each search anew.
        await db.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    rows = await db.execute(statement, params)
    return [
        SearchHit(
            event_id=r.event_id,
            session_id=r.session_id,
            seq=r.seq,
            type=r.type,
            created_at=r.created_at,
            score=float(r.score),
            snippet=r.snippet or "",
        )
        for r in rows
    ]


def search_statement(
    dialect: str,
    *,
    workspace_id: str,
    agent_id: str,
    terms: SearchTerms,
    limit: int,
    window: int,
) -> tuple[TextualSelect, dict[str, Any]]:
    """The search's SQL and its parameters (`bench/search.py` EXPLAINs this same statement)."""
    params: dict[str, Any] = {
        "agent_id": agent_id,
        "workspace_id": workspace_id,
        "window": window,
        "limit": limit,
    }
    if dialect == "sqlite":
        return _SQLITE_SEARCH, {
            **params,
            "match": fts5_match(terms, agent_id),
            "start": SNIPPET_START,
            "end": SNIPPET_END,
            "ellipsis": SNIPPET_ELLIPSIS,
            "tokens": SNIPPET_TOKENS // 2,
        }
    statement, values = _postgres_statement(terms)
    return statement, {
        **params,
        **values,
        "agent_lexeme": _tsquery_literal(AGENT_LEXEME_PREFIX + agent_id),
        "options": _HEADLINE_OPTIONS,
    }


_COLUMNS = {"created_at": UTCDateTime()}

_SQLITE_SEARCH = text(
    f"""WITH hits AS (
        SELECT rowid AS event_id, bm25({FTS_TABLE}, 1.0, 0.0) AS bm25
        FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match
        ORDER BY rowid DESC LIMIT :window
    ), best AS (
        SELECT event_id, bm25 FROM hits ORDER BY bm25, event_id DESC LIMIT :limit
    )
    SELECT e.id AS event_id, e.session_id, e.seq, e.type, e.created_at, -best.bm25 AS score,
        (SELECT snippet({FTS_TABLE}, 0, :start, :end, :ellipsis, :tokens)
         FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match AND rowid = e.id) AS snippet
    FROM best
    JOIN session_events AS e ON e.id = best.event_id
    JOIN agent_sessions AS s ON s.id = e.session_id
    WHERE s.deployed_agent_id = :agent_id AND s.workspace_id = :workspace_id
    ORDER BY best.bm25, e.id DESC"""
).columns(**_COLUMNS)


_HEADLINE_OPTIONS = (
    f'StartSel="{SNIPPET_START}", StopSel="{SNIPPET_END}", MaxWords={SNIPPET_TOKENS}, '
    f'MinWords={SNIPPET_TOKENS // 2}, MaxFragments=2, FragmentDelimiter=" {SNIPPET_ELLIPSIS} "'
)


def _tsquery_literal(lexeme: str) -> str:
    """A tsquery of exactly this lexeme (quoted, so the parser leaves it as it is)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _pg_tsquery(terms: SearchTerms) -> tuple[str, dict[str, str]]:
    """`plainto_tsquery(words) && phraseto_tsquery(phrase) && ...` with its bind values."""
    parts: list[str] = []
    values: dict[str, str] = {}
    if terms.words:
        parts.append("plainto_tsquery('english', :words)")
        values["words"] = " ".join(terms.words)
    for i, phrase in enumerate(terms.phrases):
        parts.append(f"phraseto_tsquery('english', :phrase{i})")
        values[f"phrase{i}"] = " ".join(phrase)
    return " && ".join(parts), values


def _postgres_statement(terms: SearchTerms) -> tuple[TextualSelect, dict[str, str]]:
    tsquery, values = _pg_tsquery(terms)
    # The tsquery is written out in each place (not a CTE) so the planner sees its lexemes and
    # picks by their frequency: the GIN index (terms AND the agent's lexeme) for rare and medium
    # terms, the primary key walked newest first for very common ones.
    statement = text(
        f"""WITH hits AS MATERIALIZED (
            SELECT x.event_id, x.document FROM {PG_TABLE} AS x
            WHERE x.document @@ (({tsquery}) && CAST(:agent_lexeme AS tsquery))
            ORDER BY x.event_id DESC LIMIT :window
        ), best AS (
            SELECT event_id, ts_rank(document, {tsquery}) AS score FROM hits
            ORDER BY score DESC, event_id DESC LIMIT :limit
        )
        SELECT e.id AS event_id, e.session_id, e.seq, e.type, e.created_at, best.score,
            ts_headline(
                'english', left(session_event_text(e.data), {HEADLINE_CHARS}), {tsquery}, :options
            ) AS snippet
        FROM best
        JOIN session_events AS e ON e.id = best.event_id
        JOIN agent_sessions AS s ON s.id = e.session_id
        WHERE s.deployed_agent_id = :agent_id AND s.workspace_id = :workspace_id
        ORDER BY best.score DESC, e.id DESC"""
    ).columns(**_COLUMNS)
    return statement.bindparams(*(bindparam(k) for k in values)), values
