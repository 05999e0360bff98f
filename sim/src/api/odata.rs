//! OData query subset: $top, $skip, $filter (eq, ne, and, or, startswith), nextLink.
