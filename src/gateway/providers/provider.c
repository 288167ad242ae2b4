/* provider.c: the table of provider implementations (provider.h), looked up by the ids of provider_ids.h. */
#include <stddef.h>

#include "common/macros.h"
#include "gateway/provider.h"
#include "gateway/provider_ids.h"

/* The configuration's names for the providers (`provider: openai`), indexed by PROVIDER_*. */
const char *const provider_names[PROVIDER_COUNT + 1] = {
    [PROVIDER_MOCK] = "mock",
    [PROVIDER_OPENAI] = "openai",
    [PROVIDER_AZURE_OPENAI] = "azure-openai",
    [PROVIDER_ANTHROPIC] = "anthropic",
    [PROVIDER_GEMINI] = "gemini",
    [PROVIDER_BEDROCK] = "bedrock",
    [PROVIDER_OPENAI_COMPATIBLE] = "openai-compatible",
    [PROVIDER_VERTEX] = "vertex-ai",
    [PROVIDER_COUNT] = NULL,
};

const struct provider_ops *provider_by_id(int id)
{
    static const struct provider_ops *const table[PROVIDER_COUNT] = {
        [PROVIDER_MOCK] = &provider_mock,
        [PROVIDER_OPENAI] = &provider_openai,
        [PROVIDER_AZURE_OPENAI] = &provider_azure_openai,
        [PROVIDER_ANTHROPIC] = &provider_anthropic,
        [PROVIDER_GEMINI] = &provider_gemini,
        [PROVIDER_BEDROCK] = &provider_bedrock,
        [PROVIDER_OPENAI_COMPATIBLE] = &provider_openai_compatible,
        [PROVIDER_VERTEX] = &provider_vertex, /* Claude models: provider_vertex_anthropic (registry.c) */
    };
    return id >= 0 && id < (int)ARRAY_LEN(table) ? table[id] : NULL;
}
