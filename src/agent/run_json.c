/* run_json.c: the runs API's JSON: the run request (parsed from untrusted input: fuzzed by
 * tests/fuzz/fuzz_run_request.c), a run's JSON, and the JSON Schema subset final answers are checked against. */
#include <stdio.h>
#include <string.h>

#include "agent/run.h"
#include "common/alloc.h"

static int bad(char *msg, size_t n, char *param, size_t pn, const char *p, const char *m)
{
    snprintf(msg, n, "%s", m);
    snprintf(param, pn, "%s", p);
    return -1;
}

/* One input message: {"role": "user"|"assistant", "content": string}. */
static bool message_ok(const cJSON *m)
{
    if (!cJSON_IsObject(m) || cJSON_GetArraySize(m) != 2)
        return false;
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    return cJSON_IsString(role) && (strcmp(role->valuestring, "user") == 0 ||
                                    strcmp(role->valuestring, "assistant") == 0) &&
           cJSON_IsString(content);
}

int run_request_parse(const char *body, size_t len, struct run_request *out, char *msg, size_t n, char *param,
                      size_t pn)
{
    memset(out, 0, sizeof(*out));
    param[0] = '\0';
    cJSON *o = cJSON_ParseWithLength(body ? body : "", len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return bad(msg, n, param, pn, "", "the body must be a JSON object: {\"input\": ...}");
    }
    int rc = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        if (strcmp(it->string, "input") != 0 && strcmp(it->string, "wait") != 0 &&
            strcmp(it->string, "metadata") != 0) {
            char m[160];
            snprintf(m, sizeof(m), "unknown field '%.64s' (a run takes input, wait and metadata)", it->string);
            bad(msg, n, param, pn, it->string, m);
            goto done;
        }
    }
    const cJSON *wait = cJSON_GetObjectItemCaseSensitive(o, "wait");
    if (wait && !cJSON_IsBool(wait)) {
        bad(msg, n, param, pn, "wait", "'wait' must be a boolean");
        goto done;
    }
    out->wait = cJSON_IsTrue(wait);
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(o, "input");
    if (cJSON_IsString(input)) {
        if (input->valuestring[0] == '\0') {
            bad(msg, n, param, pn, "input", "'input' must not be empty");
            goto done;
        }
        out->messages = cJSON_CreateArray();
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(out->messages, m);
    } else if (cJSON_IsArray(input)) {
        int count = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, input)
        {
            if (++count > RUN_INPUT_MAX_MESSAGES || !message_ok(m)) {
                bad(msg, n, param, pn, "input",
                    count > RUN_INPUT_MAX_MESSAGES
                        ? "'input' has more than 256 messages"
                        : "each input message is {\"role\": \"user\" or \"assistant\", \"content\": string}");
                goto done;
            }
        }
        const cJSON *last = cJSON_GetArrayItem(input, count - 1);
        if (count == 0 ||
            strcmp(cJSON_GetObjectItemCaseSensitive(last, "role")->valuestring, "user") != 0) {
            bad(msg, n, param, pn, "input", "'input' must end with a user message");
            goto done;
        }
        out->messages = cJSON_Duplicate(input, true);
    } else {
        bad(msg, n, param, pn, "input", "'input' is required: a string, or an array of messages");
        goto done;
    }
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    if (md && !cJSON_IsObject(md)) {
        cJSON_Delete(out->messages);
        out->messages = NULL;
        bad(msg, n, param, pn, "metadata", "'metadata' must be an object");
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

void run_request_free(struct run_request *rq)
{
    cJSON_Delete(rq->messages);
    rq->messages = NULL;
}

static cJSON *parse_or_string(const char *text)
{
    cJSON *v = text ? cJSON_Parse(text) : NULL;
    return v ? v : cJSON_CreateString(text ? text : "");
}

cJSON *run_to_json(const struct as_run *r, const struct as_step *steps, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", "agent.run");
    cJSON_AddStringToObject(o, "agent", r->agent);
    cJSON_AddStringToObject(o, "status", r->status);
    if (r->limit_name[0])
        cJSON_AddStringToObject(o, "limit", r->limit_name);
    if (r->output)
        cJSON_AddStringToObject(o, "output", r->output);
    else
        cJSON_AddNullToObject(o, "output");
    if (r->error)
        cJSON_AddStringToObject(o, "error", r->error);
    cJSON_AddNumberToObject(o, "created_at", (double)(r->created_ms / 1000));
    cJSON_AddNumberToObject(o, "updated_at", (double)(r->updated_ms / 1000));
    cJSON_AddNumberToObject(o, "step_count", (double)r->steps);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "input_tokens", (double)r->input_tokens);
    cJSON_AddNumberToObject(u, "output_tokens", (double)r->output_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(r->input_tokens + r->output_tokens));
    cJSON_AddNumberToObject(o, "cost_usd", r->cost_usd);
    if (r->key_id[0])
        cJSON_AddStringToObject(o, "key_id", r->key_id);
    cJSON_AddStringToObject(o, "workflow", r->workflow);
    if (steps) {
        cJSON *arr = cJSON_AddArrayToObject(o, "steps");
        for (size_t i = 0; i < n; i++) {
            const struct as_step *s = &steps[i];
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "seq", (double)s->seq);
            cJSON_AddStringToObject(j, "type", strcmp(s->kind, "llm") == 0 ? "llm" : "tool_call");
            cJSON_AddStringToObject(j, strcmp(s->kind, "llm") == 0 ? "model" : "tool", s->name);
            if (s->call_id[0])
                cJSON_AddStringToObject(j, "tool_call_id", s->call_id);
            cJSON_AddStringToObject(j, "status", s->state);
            if (strcmp(s->kind, "tool") == 0) {
                cJSON_AddItemToObject(j, "arguments", parse_or_string(s->request));
                if (s->result)
                    cJSON_AddStringToObject(j, "result", s->result);
            } else if (s->result) {
                /* the model's message (the whole request is kept in the store, not shown) */
                cJSON *resp = cJSON_Parse(s->result);
                cJSON *msg = cJSON_DetachItemFromObjectCaseSensitive(
                    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0), "message");
                cJSON *usage = cJSON_DetachItemFromObjectCaseSensitive(resp, "usage");
                if (msg)
                    cJSON_AddItemToObject(j, "message", msg);
                if (usage)
                    cJSON_AddItemToObject(j, "usage", usage);
                cJSON_Delete(resp);
            }
            if (s->t_start_ms)
                cJSON_AddNumberToObject(j, "started_at_ms", (double)s->t_start_ms);
            if (s->t_end_ms)
                cJSON_AddNumberToObject(j, "ended_at_ms", (double)s->t_end_ms);
            cJSON_AddItemToArray(arr, j);
        }
    }
    return o;
}

/* ---- JSON Schema subset ---- */

static bool type_is(const cJSON *v, const char *t)
{
    if (strcmp(t, "object") == 0)
        return cJSON_IsObject(v);
    if (strcmp(t, "array") == 0)
        return cJSON_IsArray(v);
    if (strcmp(t, "string") == 0)
        return cJSON_IsString(v);
    if (strcmp(t, "number") == 0)
        return cJSON_IsNumber(v);
    if (strcmp(t, "integer") == 0)
        return cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble;
    if (strcmp(t, "boolean") == 0)
        return cJSON_IsBool(v);
    if (strcmp(t, "null") == 0)
        return cJSON_IsNull(v);
    return true;
}

static const char *check(const cJSON *schema, const cJSON *v, const char *path, char *why, size_t n, int depth)
{
    if (!cJSON_IsObject(schema) || depth > 32)
        return why;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(schema, "type");
    if (cJSON_IsString(type) && !type_is(v, type->valuestring)) {
        snprintf(why, n, "%s must be of type %s", path, type->valuestring);
        return why;
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(schema, "enum");
    if (cJSON_IsArray(en)) {
        bool found = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, en) found = found || cJSON_Compare(e, v, true);
        if (!found) {
            snprintf(why, n, "%s is not one of the allowed values", path);
            return why;
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
        const cJSON *k;
        cJSON_ArrayForEach(k, req)
        {
            if (cJSON_IsString(k) && !cJSON_GetObjectItemCaseSensitive(v, k->valuestring)) {
                snprintf(why, n, "%s lacks the required field '%.64s'", path, k->valuestring);
                return why;
            }
        }
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
        const cJSON *p;
        cJSON_ArrayForEach(p, props)
        {
            const cJSON *sub = cJSON_GetObjectItemCaseSensitive(v, p->string);
            if (sub == NULL)
                continue;
            char sp[128];
            snprintf(sp, sizeof(sp), "%.60s.%.60s", path, p->string);
            check(p, sub, sp, why, n, depth + 1);
            if (why[0])
                return why;
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(schema, "items");
        const cJSON *e;
        int i = 0;
        cJSON_ArrayForEach(e, v)
        {
            char sp[128];
            snprintf(sp, sizeof(sp), "%.100s[%d]", path, i++);
            check(items, e, sp, why, n, depth + 1);
            if (why[0])
                return why;
        }
    }
    return why;
}

const char *json_schema_check(const cJSON *schema, const cJSON *value, char *why, size_t n)
{
    why[0] = '\0';
    return check(schema, value, "the answer", why, n, 0);
}
