/* fixtures.c: the conformance suite's fixtures (fixtures.h). The contents are what the suite's scenario texts
 * ask for; nothing here touches agentd's state. */
#include "mcp/fixtures.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

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
    {"test_error_handling", "Always fails: a tool error (isError true)."},
    {"test_image_content", "Returns an image content block (image/png)."},
    {"test_multiple_content_types", "Returns text, an image and an embedded resource."},
    {"test_simple_text", "Returns a text content block."},
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
    } else if (strcmp(name, "test_tool_with_logging") == 0) {
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
