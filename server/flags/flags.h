/* The flags room's door: feature flags per environment, evaluated over OpenFeature's Remote
 * Evaluation Protocol (OFREP) from an immutable in-memory snapshot per environment, managed
 * through /api/v1/flags (versions, rollback, promotion, change requests, scheduled
 * rollouts, import/export/diff in the shape of the platform's flags file).
 *
 * Other rooms include only this header. The model, the evaluator and the snapshot are in
 * flags_internal.h; the bucket algorithm and its test vectors are documented there and in
 * tests/unit/flags_bucket_vectors.json. */
#ifndef QDB_FLAGS_H
#define QDB_FLAGS_H

#include "module.h"
#include "platform/http.h"

extern const struct qdb_module flags_module;

/* ---- OFREP (evaluation; from memory, no state store) ---- */
/* POST /ofrep/v1/evaluate/flags/{key}: one flag. */
void flags_ofrep_evaluate_one(struct http_request *req);
/* POST /ofrep/v1/evaluate/flags: every flag of the environment; ETag (a hash of the body)
 * and If-None-Match -> 304. */
void flags_ofrep_evaluate_bulk(struct http_request *req);
/* GET /ofrep/v1/configuration: capabilities and polling interval. */
void flags_ofrep_configuration(struct http_request *req);

/* ---- management (/api/v1) ---- */
void flags_api_list(struct http_request *req);
void flags_api_create(struct http_request *req);
void flags_api_get(struct http_request *req);
void flags_api_update(struct http_request *req);
void flags_api_delete(struct http_request *req);
void flags_api_put_environment(struct http_request *req);
void flags_api_versions(struct http_request *req);
void flags_api_rollback(struct http_request *req);
void flags_api_promote(struct http_request *req);
void flags_api_export(struct http_request *req);
void flags_api_import(struct http_request *req);
void flags_api_diff(struct http_request *req);
void flags_api_events(struct http_request *req);
void flags_api_segments_list(struct http_request *req);
void flags_api_segments_create(struct http_request *req);
void flags_api_segments_get(struct http_request *req);
void flags_api_segments_update(struct http_request *req);
void flags_api_segments_delete(struct http_request *req);
void flags_api_change_requests_list(struct http_request *req);
void flags_api_change_requests_approve(struct http_request *req);
void flags_api_change_requests_reject(struct http_request *req);
/* Scheduled rollouts: POST/GET /api/v1/flags/{key}/rollouts, POST .../{id}/cancel, abort. */
void flags_api_rollouts_create(struct http_request *req);
void flags_api_rollouts_list(struct http_request *req);
void flags_api_rollouts_cancel(struct http_request *req);
void flags_api_rollouts_abort(struct http_request *req);

#endif
