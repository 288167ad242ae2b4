/* anthropic_threads.h: Anthropic message threads (`thread: {type: "create" | "continue", previous_message_id}`,
 * beta message-threads-2026-08-12) on every deployment. A thread is a conversation the server holds between turns:
 * a `create` turn asks it to keep the conversation under the reply's `id`; a `continue` turn names that id and
 * sends only the new messages (no `system`, no `tools`: the thread keeps those it was created with).
 *
 * Anthropic deployments hold their own threads (the body passes through). For every other deployment agentd holds
 * them in the store that keeps Responses (kind "thread", the reply's id): the record is the conversation so far,
 * {"system", "tools", "messages"}, and a `continue` turn is rebuilt into the full request before translation. A
 * thread agentd holds that is continued on an Anthropic deployment goes there as the full conversation under a new
 * `create` (Anthropic then holds it under its own reply id). Never silent loss: an unknown id is a 404 with
 * error.details.error_code "thread_not_found" (the SDKs replay the conversation under a new thread), and a thread
 * that nobody can hold (store disabled, no Anthropic deployment) is a 400 "thread_unsupported_request". */
#ifndef AGENTD_ANTHROPIC_THREADS_H
#define AGENTD_ANTHROPIC_THREADS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/jscan.h"
#include "gateway/gw_types.h"

struct exchange;
struct athread;

enum athread_mode { ATHREAD_NONE, ATHREAD_CREATE, ATHREAD_CONTINUE };

#define ATHREAD_MAX_ID 128

/* Validates the request's `thread` member (jscan value; J_NONE or null: no thread). 0 and *mode, or -1 with a 400
 * in err. id (ATHREAD_MAX_ID + 1 bytes) gets previous_message_id on a continue. */
int athread_check(const struct jval *v, enum athread_mode *mode, char *id, struct gw_error *err);

/* The Anthropic front's prepare stage (enum ex_next): a continue turn looks its thread up in the store (EX_WAIT). The
 * thread state is kept in *slot (freed with athread_free). */
int athread_prepare(struct exchange *ex, struct athread **slot);
void athread_free(struct athread *t);

/* Before translation: 0, or -1 with err when this thread cannot be translated (a continue whose id only an
 * Anthropic deployment may know, a thread with no store to hold it). */
int athread_translatable(const struct athread *t, struct gw_error *err);

/* Bytes of the held conversation a continue turn was rebuilt from (0 for none or NULL): input estimates count it. */
size_t athread_held_bytes(const struct athread *t);

/* A translated stream's deltas, kept to record the reply. */
void athread_delta(struct athread *t, const struct chat_delta *d);
/* The end of a translated turn: keeps the conversation with its reply under ex->id. message: the Anthropic message
 * the client received (NULL for a stream: the reply is rebuilt from the deltas). */
void athread_keep(struct exchange *ex, struct athread *t, const cJSON *message);

#endif
