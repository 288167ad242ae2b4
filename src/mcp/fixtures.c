/* fixtures.c: the conformance suite's fixtures (fixtures.h). The contents are what the suite's scenario texts
 * ask for; nothing here touches agentd's state. */
#include "mcp/fixtures.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>

#include "common/macros.h"

/* a 1x1 red PNG, and a 44-byte silent WAV header with no samples */
#define PNG_1PX                                                                                                     \
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
#define WAV_EMPTY "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="

static const struct {
    const char *name, *description;
} tools[] = {
    {"test_audio_content", "Returns an audio content block (audio/wav)."},
    {"test_embedded_resource", "Returns an embedded text resource."},
    {"test_elicitation", "Asks the user (elicitation/create) for a username and an email."},
    {"test_elicitation_sep1034_defaults", "Asks the user with a schema whose fields have defaults."},
    {"test_elicitation_sep1330_enums", "Asks the user with the five enum schema forms."},
    {"test_error_handling", "Always fails: a tool error (isError true)."},
    {"test_image_content", "Returns an image content block (image/png)."},
    {"test_input_required_result_capabilities", "Asks only for the inputs the client's capabilities allow."},
    {"test_input_required_result_elicitation", "Asks the client for a name (input_required), then greets it."},
    {"test_input_required_result_list_roots", "Asks the client for its roots (input_required)."},
    {"test_input_required_result_multi_round", "Asks twice, in two rounds, with a signed requestState."},
    {"test_input_required_result_multiple_inputs", "Asks for an elicitation, a sampling and the roots at once."},
    {"test_input_required_result_request_state", "Asks for a confirmation with a signed requestState."},
    {"test_input_required_result_sampling", "Asks the client for a sampling (input_required)."},
    {"test_input_required_result_tampered_state", "Refuses a requestState that fails its integrity check."},
    {"test_logging_tool", "Sends three log notifications (2026-07-28: only when the request sets a logLevel)."},
    {"test_missing_capability", "Needs the client's sampling capability (-32021 when it is not declared)."},
    {"test_multiple_content_types", "Returns text, an image and an embedded resource."},
    {"test_sampling", "Asks the client's model (sampling/createMessage) to answer a prompt."},
    {"test_simple_text", "Returns a text content block."},
    {"test_streaming_elicitation", "Answers with a result only: never a request of the server's on the stream."},
    {"test_tool_with_logging", "Sends three log notifications, then returns text."},
    {"test_tool_with_progress", "Sends progress 0, 50 and 100 of 100 when given a progressToken, then returns text."},
};

cJSON *fixtures_tools_json(void)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < ARRAY_LEN(tools); i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", tools[i].name);
        cJSON_AddStringToObject(t, "description", tools[i].description);
        cJSON *s = cJSON_AddObjectToObject(t, "inputSchema");
        cJSON_AddStringToObject(s, "type", "object");
        cJSON_AddObjectToObject(s, "properties");
        cJSON_AddItemToArray(a, t);
    }
    return a;
}

bool fixtures_has_tool(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(tools); i++)
        if (strcmp(name, tools[i].name) == 0)
            return true;
    return false;
}

static cJSON *text_block(const char *text)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "text");
    cJSON_AddStringToObject(c, "text", text);
    return c;
}

static cJSON *data_block(const char *type, const char *data, const char *mime)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", type);
    cJSON_AddStringToObject(c, "data", data);
    cJSON_AddStringToObject(c, "mimeType", mime);
    return c;
}

static cJSON *resource_block(const char *uri, const char *mime, const char *text)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "resource");
    cJSON *r = cJSON_AddObjectToObject(c, "resource");
    cJSON_AddStringToObject(r, "uri", uri);
    cJSON_AddStringToObject(r, "mimeType", mime);
    cJSON_AddStringToObject(r, "text", text);
    return c;
}

static void note(cJSON *notes, const char *method, cJSON *params)
{
    cJSON *n = cJSON_CreateObject();
    cJSON_AddStringToObject(n, "jsonrpc", "2.0");
    cJSON_AddStringToObject(n, "method", method);
    cJSON_AddItemToObject(n, "params", params);
    cJSON_AddItemToArray(notes, n);
}

cJSON *fixtures_tool_result(const char *name, const cJSON *progress_token, cJSON *notes)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(r, "content");
    if (strcmp(name, "test_simple_text") == 0) {
        cJSON_AddItemToArray(content, text_block("This is a simple text response for testing."));
    } else if (strcmp(name, "test_image_content") == 0) {
        cJSON_AddItemToArray(content, data_block("image", PNG_1PX, "image/png"));
    } else if (strcmp(name, "test_audio_content") == 0) {
        cJSON_AddItemToArray(content, data_block("audio", WAV_EMPTY, "audio/wav"));
    } else if (strcmp(name, "test_embedded_resource") == 0) {
        cJSON_AddItemToArray(content, resource_block("test://embedded-resource", "text/plain",
                                                     "This is an embedded resource content."));
    } else if (strcmp(name, "test_multiple_content_types") == 0) {
        cJSON_AddItemToArray(content, text_block("Multiple content types test:"));
        cJSON_AddItemToArray(content, data_block("image", PNG_1PX, "image/png"));
        cJSON_AddItemToArray(content, resource_block("test://mixed-content-resource", "application/json",
                                                     "{\"test\":\"data\",\"value\":123}"));
    } else if (strcmp(name, "test_error_handling") == 0) {
        cJSON_AddItemToArray(content, text_block("This tool intentionally returns an error for testing"));
        cJSON_AddBoolToObject(r, "isError", true);
    } else if (strcmp(name, "test_missing_capability") == 0) {
        cJSON_AddItemToArray(content, text_block("The client declared the sampling capability."));
    } else if (strcmp(name, "test_streaming_elicitation") == 0) {
        cJSON_AddItemToArray(content, text_block("agentd sends no requests of its own on a response stream."));
    } else if (strcmp(name, "test_tool_with_logging") == 0 || strcmp(name, "test_logging_tool") == 0) {
        static const char *const lines[] = {"Tool execution started", "Tool processing data",
                                            "Tool execution completed"};
        for (size_t i = 0; i < ARRAY_LEN(lines); i++) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "level", "info");
            cJSON_AddStringToObject(p, "logger", "agentd");
            cJSON_AddStringToObject(p, "data", lines[i]);
            note(notes, "notifications/message", p);
        }
        cJSON_AddItemToArray(content, text_block("Tool with logging executed successfully"));
    } else if (strcmp(name, "test_tool_with_progress") == 0) {
        for (int i = 0; (cJSON_IsString(progress_token) || cJSON_IsNumber(progress_token)) && i <= 2; i++) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddItemToObject(p, "progressToken", cJSON_Duplicate(progress_token, true));
            cJSON_AddNumberToObject(p, "progress", 50 * i);
            cJSON_AddNumberToObject(p, "total", 100);
            note(notes, "notifications/progress", p);
        }
        cJSON_AddItemToArray(content, text_block("Tool with progress executed successfully"));
    } else {
        cJSON_AddItemToArray(content, text_block("no such fixture"));
        cJSON_AddBoolToObject(r, "isError", true);
    }
    return r;
}

/* ---- resources ---- */

#define TEMPLATE_PREFIX "test://template/"
#define TEMPLATE_SUFFIX "/data"

cJSON *fixtures_resources_json(void)
{
    cJSON *a = cJSON_CreateArray();
    static const char *const rs[][3] = {{"test://static-binary", "static-binary", "image/png"},
                                        {"test://static-text", "static-text", "text/plain"}};
    for (size_t i = 0; i < ARRAY_LEN(rs); i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "uri", rs[i][0]);
        cJSON_AddStringToObject(r, "name", rs[i][1]);
        cJSON_AddStringToObject(r, "mimeType", rs[i][2]);
        cJSON_AddItemToArray(a, r);
    }
    return a;
}

cJSON *fixtures_resource_templates_json(void)
{
    cJSON *a = cJSON_CreateArray();
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "uriTemplate", TEMPLATE_PREFIX "{id}" TEMPLATE_SUFFIX);
    cJSON_AddStringToObject(t, "name", "template");
    cJSON_AddStringToObject(t, "description", "A resource whose text names its id.");
    cJSON_AddStringToObject(t, "mimeType", "application/json");
    cJSON_AddItemToArray(a, t);
    return a;
}

static cJSON *one_content(const char *uri, const char *mime, const char *field, const char *value)
{
    cJSON *a = cJSON_CreateArray();
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "uri", uri);
    cJSON_AddStringToObject(c, "mimeType", mime);
    cJSON_AddStringToObject(c, field, value);
    cJSON_AddItemToArray(a, c);
    return a;
}

cJSON *fixtures_resource_read(const char *uri)
{
    if (strcmp(uri, "test://static-text") == 0)
        return one_content(uri, "text/plain", "text", "This is the content of the static text resource.");
    if (strcmp(uri, "test://static-binary") == 0)
        return one_content(uri, "image/png", "blob", PNG_1PX);
    size_t n = strlen(uri), pl = sizeof(TEMPLATE_PREFIX) - 1, sl = sizeof(TEMPLATE_SUFFIX) - 1;
    if (n > pl + sl && n - pl - sl <= 64 && strncmp(uri, TEMPLATE_PREFIX, pl) == 0 &&
        strcmp(uri + n - sl, TEMPLATE_SUFFIX) == 0) {
        const char *id = uri + pl;
        size_t il = n - pl - sl;
        for (size_t i = 0; i < il; i++)
            if (id[i] == '/' || id[i] == '"' || id[i] == '\\' || (unsigned char)id[i] < 0x20)
                return NULL;
        char text[160];
        snprintf(text, sizeof(text), "{\"id\":\"%.*s\",\"templateTest\":true,\"data\":\"Data for ID: %.*s\"}",
                 (int)il, id, (int)il, id);
        return one_content(uri, "application/json", "text", text);
    }
    return NULL;
}

/* ---- prompts ---- */

static void add_arg(cJSON *args, const char *name, const char *desc)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "name", name);
    cJSON_AddStringToObject(a, "description", desc);
    cJSON_AddBoolToObject(a, "required", true);
    cJSON_AddItemToArray(args, a);
}

cJSON *fixtures_prompts_json(void)
{
    cJSON *a = cJSON_CreateArray();
    static const char *const names[] = {"test_prompt_with_arguments", "test_prompt_with_embedded_resource",
                                        "test_prompt_with_image", "test_simple_prompt"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", names[i]);
        cJSON_AddStringToObject(p, "description", "A conformance fixture prompt.");
        if (i <= 1) {
            cJSON *args = cJSON_AddArrayToObject(p, "arguments");
            if (i == 0) {
                add_arg(args, "arg1", "First test argument");
                add_arg(args, "arg2", "Second test argument");
            } else {
                add_arg(args, "resourceUri", "URI of the resource to embed");
            }
        }
        cJSON_AddItemToArray(a, p);
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", "test_input_required_result_prompt");
    cJSON_AddStringToObject(p, "description", "Asks the client for context (input_required), then answers.");
    cJSON_AddItemToArray(a, p);
    return a;
}

static cJSON *message(cJSON *messages, cJSON *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddItemToObject(m, "content", content);
    cJSON_AddItemToArray(messages, m);
    return m;
}

static const char *arg(const cJSON *args, const char *name)
{
    const cJSON *v = cJSON_IsObject(args) ? cJSON_GetObjectItemCaseSensitive(args, name) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cJSON *fixtures_prompt_get(const char *name, const cJSON *args, const char **why)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(r, "messages");
    if (strcmp(name, "test_simple_prompt") == 0) {
        message(msgs, text_block("This is a simple prompt for testing."));
    } else if (strcmp(name, "test_prompt_with_arguments") == 0) {
        const char *a1 = arg(args, "arg1"), *a2 = arg(args, "arg2");
        if (!a1 || !a2 || strlen(a1) > 4096 || strlen(a2) > 4096) {
            *why = "Invalid params: arguments arg1 and arg2 (strings) are required";
            cJSON_Delete(r);
            return NULL;
        }
        char text[8300];
        snprintf(text, sizeof(text), "Prompt with arguments: arg1='%s', arg2='%s'", a1, a2);
        message(msgs, text_block(text));
    } else if (strcmp(name, "test_prompt_with_embedded_resource") == 0) {
        const char *u = arg(args, "resourceUri");
        if (!u || strlen(u) > 2048) {
            *why = "Invalid params: argument resourceUri (a string) is required";
            cJSON_Delete(r);
            return NULL;
        }
        message(msgs, resource_block(u, "text/plain", "Embedded resource content for testing."));
        message(msgs, text_block("Please process the embedded resource above."));
    } else if (strcmp(name, "test_prompt_with_image") == 0) {
        message(msgs, data_block("image", PNG_1PX, "image/png"));
        message(msgs, text_block("Please analyze the image above."));
    } else {
        *why = "Invalid params: unknown prompt";
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* ---- MRTR (input_required) ---- */

static cJSON *elicit(const char *message, const char *field, const char *type)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "method", "elicitation/create");
    cJSON *p = cJSON_AddObjectToObject(r, "params");
    cJSON_AddStringToObject(p, "message", message);
    cJSON *sc = cJSON_AddObjectToObject(p, "requestedSchema");
    cJSON_AddStringToObject(sc, "type", "object");
    cJSON *props = cJSON_AddObjectToObject(sc, "properties");
    cJSON *f = cJSON_AddObjectToObject(props, field);
    cJSON_AddStringToObject(f, "type", type);
    cJSON *req = cJSON_AddArrayToObject(sc, "required");
    cJSON_AddItemToArray(req, cJSON_CreateString(field));
    return r;
}

static cJSON *sample(const char *text, int max_tokens)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "method", "sampling/createMessage");
    cJSON *p = cJSON_AddObjectToObject(r, "params");
    cJSON *msgs = cJSON_AddArrayToObject(p, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddItemToObject(m, "content", text_block(text));
    cJSON_AddItemToArray(msgs, m);
    cJSON_AddNumberToObject(p, "maxTokens", max_tokens);
    return r;
}

static cJSON *roots(void)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "method", "roots/list");
    cJSON_AddObjectToObject(r, "params");
    return r;
}

/* The input requests of round k of a fixture (NULL past its last round); *stateful: it uses a requestState. */
static cJSON *mrtr_round(const char *name, int k, const cJSON *caps, bool *stateful)
{
    const char *t = name + strlen("test_input_required_result_");
    *stateful = strcmp(t, "request_state") == 0 || strcmp(t, "multiple_inputs") == 0 ||
                strcmp(t, "multi_round") == 0 || strcmp(t, "tampered_state") == 0;
    int rounds = strcmp(t, "multi_round") == 0 ? 2 : 1;
    if (k >= rounds)
        return NULL;
    cJSON *in = cJSON_CreateObject();
    if (strcmp(t, "elicitation") == 0) {
        cJSON_AddItemToObject(in, "user_name", elicit("What is your name?", "name", "string"));
    } else if (strcmp(t, "sampling") == 0) {
        cJSON_AddItemToObject(in, "capital_question", sample("What is the capital of France?", 100));
    } else if (strcmp(t, "list_roots") == 0) {
        cJSON_AddItemToObject(in, "client_roots", roots());
    } else if (strcmp(t, "request_state") == 0 || strcmp(t, "tampered_state") == 0) {
        cJSON_AddItemToObject(in, "confirm", elicit("Please confirm", "ok", "boolean"));
    } else if (strcmp(t, "multiple_inputs") == 0) {
        cJSON_AddItemToObject(in, "user_name", elicit("What is your name?", "name", "string"));
        cJSON_AddItemToObject(in, "greeting", sample("Generate a greeting", 50));
        cJSON_AddItemToObject(in, "client_roots", roots());
    } else if (strcmp(t, "multi_round") == 0) {
        if (k == 0)
            cJSON_AddItemToObject(in, "step1", elicit("Step 1: What is your name?", "name", "string"));
        else
            cJSON_AddItemToObject(in, "step2", elicit("Step 2: What is your favorite color?", "color", "string"));
    } else if (strcmp(t, "capabilities") == 0) {
        if (cJSON_GetObjectItemCaseSensitive(caps, "elicitation"))
            cJSON_AddItemToObject(in, "user_name", elicit("What is your name?", "name", "string"));
        if (cJSON_GetObjectItemCaseSensitive(caps, "sampling"))
            cJSON_AddItemToObject(in, "question", sample("What is the capital of France?", 100));
        if (cJSON_GetObjectItemCaseSensitive(caps, "roots"))
            cJSON_AddItemToObject(in, "client_roots", roots());
        if (in->child == NULL) { /* nothing the client can answer: done without input */
            cJSON_Delete(in);
            return NULL;
        }
    } else if (strcmp(t, "prompt") == 0) {
        cJSON_AddItemToObject(in, "user_context", elicit("What context should the prompt use?", "context", "string"));
    }
    return in;
}

bool fixtures_is_mrtr(const char *name)
{
    static const char *const names[] = {"test_input_required_result_capabilities",
                                        "test_input_required_result_elicitation",
                                        "test_input_required_result_list_roots",
                                        "test_input_required_result_multi_round",
                                        "test_input_required_result_multiple_inputs",
                                        "test_input_required_result_prompt",
                                        "test_input_required_result_request_state",
                                        "test_input_required_result_sampling",
                                        "test_input_required_result_tampered_state"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

static unsigned char state_key[32];
static pthread_once_t state_once = PTHREAD_ONCE_INIT;

static void state_key_init(void)
{
    if (RAND_bytes(state_key, sizeof(state_key)) != 1)
        memset(state_key, 0x5a, sizeof(state_key)); /* (tests only: a fixed key still detects tampering) */
}

/* "<name>.<k>.<hex HMAC-SHA256 of name.k>" */
static void state_sign(const char *name, int k, char *out, size_t n)
{
    pthread_once(&state_once, state_key_init);
    char msg[128];
    int ml = snprintf(msg, sizeof(msg), "%s.%d", name, k);
    unsigned char mac[32];
    unsigned int mlen = 0;
    HMAC(EVP_sha256(), state_key, sizeof(state_key), (const unsigned char *)msg, (size_t)ml, mac, &mlen);
    int w = snprintf(out, n, "%s.", msg);
    for (unsigned i = 0; i < mlen && (size_t)w + 2 < n; i++)
        w += snprintf(out + w, n - (size_t)w, "%02x", mac[i]);
}

/* The round a requestState names for this fixture, or -1 when it does not verify. */
static int state_round(const char *name, const char *state)
{
    if (strlen(state) > 256)
        return -1;
    size_t nl = strlen(name);
    if (strncmp(state, name, nl) != 0 || state[nl] != '.' || state[nl + 1] < '0' || state[nl + 1] > '9')
        return -1;
    int k = state[nl + 1] - '0';
    char want[256];
    state_sign(name, k, want, sizeof(want));
    size_t wl = strlen(want);
    if (strlen(state) != wl || CRYPTO_memcmp(want, state, wl) != 0)
        return -1;
    return k;
}

cJSON *fixtures_mrtr(const char *name, const cJSON *params, const cJSON *caps, const char **why)
{
    const cJSON *responses = cJSON_GetObjectItemCaseSensitive(params, "inputResponses");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(params, "requestState");
    bool stateful = false;
    int k = 0;
    cJSON *in = mrtr_round(name, 0, caps, &stateful);
    if (responses && !cJSON_IsObject(responses)) {
        cJSON_Delete(in);
        *why = "Invalid params: inputResponses must be an object";
        return NULL;
    }
    if (state) {
        k = cJSON_IsString(state) ? state_round(name, state->valuestring) : -1;
        if (k < 0) {
            cJSON_Delete(in);
            *why = "Invalid params: requestState failed its integrity check";
            return NULL;
        }
        cJSON_Delete(in);
        in = mrtr_round(name, k, caps, &stateful);
    }
    /* the answers to this round's requests: all there (and objects) moves to the next round */
    bool answered = in != NULL && responses != NULL && (!stateful || state != NULL || k == 0);
    const cJSON *req;
    for (req = in ? in->child : NULL; answered && req; req = req->next) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(responses, req->string);
        if (a == NULL) {
            answered = false; /* missing: asked again */
        } else if (!cJSON_IsObject(a)) {
            cJSON_Delete(in);
            *why = "Invalid params: each input response must be an object";
            return NULL;
        }
    }
    if (answered) {
        cJSON_Delete(in);
        in = mrtr_round(name, ++k, caps, &stateful);
    }
    cJSON *r = cJSON_CreateObject();
    if (in) {
        cJSON_AddStringToObject(r, "resultType", "input_required");
        cJSON_AddItemToObject(r, "inputRequests", in);
        if (stateful) {
            char st[256];
            state_sign(name, k, st, sizeof(st));
            cJSON_AddStringToObject(r, "requestState", st);
        }
        return r;
    }
    const cJSON *un = cJSON_GetObjectItemCaseSensitive(responses, "user_name");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(un, "content"), "name");
    char text[200];
    snprintf(text, sizeof(text), "Hello, %.100s!", cJSON_IsString(nm) ? nm->valuestring : "there");
    if (strcmp(name, "test_input_required_result_prompt") == 0) {
        cJSON *msgs = cJSON_AddArrayToObject(r, "messages");
        message(msgs, text_block("Use the context the user gave."));
    } else {
        cJSON *content = cJSON_AddArrayToObject(r, "content");
        cJSON_AddItemToArray(content, text_block(text));
    }
    return r;
}

/* ---- asking the client (2025-11-25: requests on the response stream) ---- */

static cJSON *prop(cJSON *props, const char *name, const char *type)
{
    cJSON *p = cJSON_AddObjectToObject(props, name);
    cJSON_AddStringToObject(p, "type", type);
    return p;
}

static void options(cJSON *arr, const char *const *v, const char *const *titles, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (titles) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "const", v[i]);
            cJSON_AddStringToObject(o, "title", titles[i]);
            cJSON_AddItemToArray(arr, o);
        } else {
            cJSON_AddItemToArray(arr, cJSON_CreateString(v[i]));
        }
    }
}

cJSON *fixtures_client_request(const char *name, const cJSON *args)
{
    const char *arg_prompt = arg(args, "prompt"), *arg_msg = arg(args, "message");
    cJSON *r = cJSON_CreateObject();
    cJSON *p = cJSON_CreateObject();
    if (strcmp(name, "test_sampling") == 0) {
        cJSON_AddStringToObject(r, "method", "sampling/createMessage");
        cJSON *msgs = cJSON_AddArrayToObject(p, "messages");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddItemToObject(m, "content", text_block(arg_prompt && strlen(arg_prompt) < 4096 ? arg_prompt : ""));
        cJSON_AddItemToArray(msgs, m);
        cJSON_AddNumberToObject(p, "maxTokens", 100);
        cJSON_AddItemToObject(r, "params", p);
        return r;
    }
    cJSON_AddStringToObject(r, "method", "elicitation/create");
    cJSON *sc = cJSON_CreateObject();
    cJSON_AddStringToObject(sc, "type", "object");
    cJSON *props = cJSON_AddObjectToObject(sc, "properties");
    if (strcmp(name, "test_elicitation") == 0) {
        cJSON_AddStringToObject(p, "message", arg_msg && strlen(arg_msg) < 4096 ? arg_msg : "Please answer");
        cJSON_AddStringToObject(prop(props, "username", "string"), "description", "User's response");
        cJSON_AddStringToObject(prop(props, "email", "string"), "description", "User's email address");
        cJSON *req = cJSON_AddArrayToObject(sc, "required");
        cJSON_AddItemToArray(req, cJSON_CreateString("username"));
        cJSON_AddItemToArray(req, cJSON_CreateString("email"));
    } else if (strcmp(name, "test_elicitation_sep1034_defaults") == 0) {
        cJSON_AddStringToObject(p, "message", "Please review the defaults");
        cJSON_AddStringToObject(prop(props, "name", "string"), "default", "John Doe");
        cJSON_AddNumberToObject(prop(props, "age", "integer"), "default", 30);
        cJSON_AddNumberToObject(prop(props, "score", "number"), "default", 95.5);
        cJSON *st = prop(props, "status", "string");
        static const char *const sv[] = {"active", "inactive", "pending"};
        options(cJSON_AddArrayToObject(st, "enum"), sv, NULL, 3);
        cJSON_AddStringToObject(st, "default", "active");
        cJSON_AddBoolToObject(prop(props, "verified", "boolean"), "default", true);
    } else if (strcmp(name, "test_elicitation_sep1330_enums") == 0) {
        cJSON_AddStringToObject(p, "message", "Please choose");
        static const char *const o3[] = {"option1", "option2", "option3"};
        static const char *const v3[] = {"value1", "value2", "value3"};
        static const char *const legacy[] = {"opt1", "opt2", "opt3"};
        static const char *const first[] = {"First Option", "Second Option", "Third Option"};
        static const char *const choice[] = {"First Choice", "Second Choice", "Third Choice"};
        static const char *const names[] = {"Option One", "Option Two", "Option Three"};
        options(cJSON_AddArrayToObject(prop(props, "untitledSingle", "string"), "enum"), o3, NULL, 3);
        options(cJSON_AddArrayToObject(prop(props, "titledSingle", "string"), "oneOf"), v3, first, 3);
        cJSON *le = prop(props, "legacyEnum", "string");
        options(cJSON_AddArrayToObject(le, "enum"), legacy, NULL, 3);
        options(cJSON_AddArrayToObject(le, "enumNames"), names, NULL, 3);
        cJSON *um = prop(props, "untitledMulti", "array");
        cJSON *ui = cJSON_AddObjectToObject(um, "items");
        cJSON_AddStringToObject(ui, "type", "string");
        options(cJSON_AddArrayToObject(ui, "enum"), o3, NULL, 3);
        cJSON *tm = prop(props, "titledMulti", "array");
        cJSON *ti = cJSON_AddObjectToObject(tm, "items");
        options(cJSON_AddArrayToObject(ti, "anyOf"), v3, choice, 3);
    } else {
        cJSON_Delete(sc);
        cJSON_Delete(p);
        cJSON_Delete(r);
        return NULL;
    }
    cJSON_AddItemToObject(p, "requestedSchema", sc);
    cJSON_AddItemToObject(r, "params", p);
    return r;
}

cJSON *fixtures_client_result(const char *name, const cJSON *answer)
{
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(answer, "result");
    cJSON *r = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(r, "content");
    if (!cJSON_IsObject(res)) {
        cJSON_AddItemToArray(content, text_block("The client refused the request."));
        cJSON_AddBoolToObject(r, "isError", true);
        return r;
    }
    char *js = cJSON_PrintUnformatted(res);
    char text[2048];
    if (strcmp(name, "test_sampling") == 0) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(res, "content"), "text");
        snprintf(text, sizeof(text), "LLM response: %.1900s", cJSON_IsString(t) ? t->valuestring : "");
    } else if (strcmp(name, "test_elicitation") == 0) {
        snprintf(text, sizeof(text), "User response: %.1900s", js ? js : "");
    } else {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(res, "action");
        char *c = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(res, "content"));
        snprintf(text, sizeof(text), "Elicitation completed: action=%.32s, content=%.1900s",
                 cJSON_IsString(a) ? a->valuestring : "?", c ? c : "{}");
        cJSON_free(c);
    }
    cJSON_free(js);
    cJSON_AddItemToArray(content, text_block(text));
    return r;
}
