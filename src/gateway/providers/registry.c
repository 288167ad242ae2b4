#include <stddef.h>

#include "config/config.h"
#include "gateway/provider.h"

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
    };
    return id >= 0 && id < PROVIDER_COUNT ? table[id] : NULL;
}
