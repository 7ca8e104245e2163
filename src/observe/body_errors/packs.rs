//! The built-in packs: for each vendor, where its answers carry an error and the HTTP status each
//! documented code stands for, with the page the code comes from. A code a pack does not list
//! is counted `api_code="other"` under the pack's `other` status, when it has one.

/// One rule of a pack: a JSON pointer (`*` for every element) and what its values mean.
pub struct PackRule {
    pub pointer: &'static str,
    pub verdict: PackVerdict,
}

pub enum PackVerdict {
    /// The value is an HTTP status; 400 to 599 is an error standing for itself, anything else
    /// (a 2xx, or a number HTTP has no error class for) is none.
    HttpStatus,
    /// Values that mean success, values that mean an error (with the HTTP status each stands
    /// for), and the status of any other value (`None`: other values are not errors).
    Table {
        ok: &'static [&'static str],
        errors: &'static [(&'static str, u16)],
        other: Option<u16>,
    },
}

pub struct Pack {
    pub name: &'static str,
    pub rules: &'static [PackRule],
}

/// The codes Apollo Server documents, which most GraphQL servers reuse.
/// <https://www.apollographql.com/docs/apollo-server/data/errors#built-in-error-codes>
const APOLLO: &[(&str, u16)] = &[
    ("GRAPHQL_PARSE_FAILED", 400),
    ("GRAPHQL_VALIDATION_FAILED", 400),
    ("BAD_USER_INPUT", 400),
    ("PERSISTED_QUERY_NOT_SUPPORTED", 400),
    ("OPERATION_RESOLUTION_FAILURE", 400),
    ("BAD_REQUEST", 400),
    ("UNAUTHENTICATED", 401),
    ("FORBIDDEN", 403),
    ("INTERNAL_SERVER_ERROR", 500),
];

pub const PACKS: &[Pack] = &[
    Pack {
        name: "tiktok",
        rules: &[PackRule {
            // TikTok Business API: every answer is HTTP 200 with `code`, 0 on success.
            // business-api.tiktok.com/portal/docs, "Return codes"; 40100 as Airbyte's
            // source-tiktok-marketing manifest backs off on it (RATE_LIMITED), 40007 as
            // TikTok's Business Messaging error list (via help.sleekflow.io) gives it.
            pointer: "/code",
            verdict: PackVerdict::Table {
                ok: &["0"],
                errors: &[
                    ("40001", 403),
                    ("40002", 403),
                    ("40007", 404),
                    ("40100", 429),
                    ("40105", 401),
                ],
                // Airbyte fails the sync on any other non-zero code rather than retrying it.
                other: Some(400),
            },
        }],
    },
    Pack {
        name: "graphql",
        rules: &[
            PackRule {
                pointer: "/errors/*/extensions/code",
                verdict: PackVerdict::Table {
                    ok: &[
                        // A signal to send the full query, which clients do by themselves.
                        "PERSISTED_QUERY_NOT_FOUND",
                    ],
                    errors: APOLLO,
                    // Apollo Server gives an error without a code INTERNAL_SERVER_ERROR.
                    other: Some(500),
                },
            },
            PackRule {
                // GitHub's GraphQL API names the kind in `type` instead.
                // docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api
                pointer: "/errors/*/type",
                verdict: PackVerdict::Table {
                    ok: &[],
                    errors: &[
                        ("RATE_LIMITED", 429),
                        ("NOT_FOUND", 404),
                        ("FORBIDDEN", 403),
                    ],
                    other: None,
                },
            },
        ],
    },
    Pack {
        name: "shopify_graphql",
        rules: &[PackRule {
            // shopify.dev/docs/api/admin-graphql, "Status and error codes" (200 OK with
            // errors), and shopify.dev/docs/api/usage/rate-limits (THROTTLED,
            // MAX_COST_EXCEEDED).
            pointer: "/errors/*/extensions/code",
            verdict: PackVerdict::Table {
                ok: &[],
                errors: &[
                    ("THROTTLED", 429),
                    // "The client doesn't have correct authentication credentials. Similar
                    // to 401 Unauthorized."
                    ("ACCESS_DENIED", 401),
                    ("SHOP_INACTIVE", 403),
                    ("INTERNAL_SERVER_ERROR", 500),
                    ("MAX_COST_EXCEEDED", 400),
                    ("BAD_USER_INPUT", 400),
                    ("GRAPHQL_VALIDATION_FAILED", 400),
                ],
                other: Some(500),
            },
        }],
    },
    Pack {
        name: "salesforce_composite",
        rules: &[
            // developer.salesforce.com, REST API "Composite" (compositeResponse[]) and
            // "Composite Batch" (results[]) response bodies: each subrequest's own status.
            PackRule {
                pointer: "/compositeResponse/*/httpStatusCode",
                verdict: PackVerdict::HttpStatus,
            },
            PackRule {
                pointer: "/results/*/statusCode",
                verdict: PackVerdict::HttpStatus,
            },
        ],
    },
    Pack {
        name: "hubspot_batch",
        rules: &[PackRule {
            // developers.hubspot.com/docs/api/error-handling, "Multi-status errors": a 207
            // whose errors[] each carry a category.
            pointer: "/errors/*/category",
            verdict: PackVerdict::Table {
                ok: &[],
                errors: &[
                    ("RATE_LIMITS", 429),
                    ("VALIDATION_ERROR", 400),
                    ("INVALID_EMAIL", 400),
                    ("OBJECT_NOT_FOUND", 404),
                    ("MISSING_SCOPES", 403),
                    ("INVALID_AUTHENTICATION", 401),
                    ("EXPIRED_AUTHENTICATION", 401),
                    ("CONFLICT", 409),
                    ("OBJECT_ALREADY_EXISTS", 409),
                ],
                other: Some(400),
            },
        }],
    },
    Pack {
        name: "meta_batch",
        rules: &[
            // developers.facebook.com/docs/graph-api/batch-requests: an array with one
            // `{code, headers, body}` per request, `code` its HTTP status.
            PackRule {
                pointer: "/*/code",
                verdict: PackVerdict::HttpStatus,
            },
            // developers.facebook.com/docs/graph-api/guides/error-handling and
            // .../overview/rate-limiting: a single call's `error.code`, which for a rate limit
            // comes with HTTP 400, not 429.
            PackRule {
                pointer: "/error/code",
                verdict: PackVerdict::Table {
                    ok: &[],
                    errors: &[
                        ("1", 500),
                        ("2", 503),
                        ("4", 429),
                        ("17", 429),
                        ("32", 429),
                        ("341", 429),
                        ("613", 429),
                        ("80000", 429),
                        ("80001", 429),
                        ("80002", 429),
                        ("80003", 429),
                        ("80004", 429),
                        ("80005", 429),
                        ("80006", 429),
                        ("80008", 429),
                        ("80009", 429),
                        ("80014", 429),
                        ("102", 401),
                        ("190", 401),
                        ("10", 403),
                        ("200", 403),
                        ("368", 403),
                        ("100", 400),
                    ],
                    other: Some(400),
                },
            },
        ],
    },
];

/// The pack called `name`.
pub fn pack(name: &str) -> Option<&'static Pack> {
    PACKS.iter().find(|p| p.name == name)
}

/// The packs' names, for an error that lists them.
pub fn names() -> String {
    PACKS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}
