/* provider_ids.h: the upstream providers agentd can call, by number, and the names the configuration uses for
 * them (`provider: openai`). The table of their implementations is gateway/providers/provider.c, which also
 * defines the names, so a new provider is registered in one place. */
#ifndef AGENTD_PROVIDER_IDS_H
#define AGENTD_PROVIDER_IDS_H

enum {
    PROVIDER_MOCK,
    PROVIDER_OPENAI,
    PROVIDER_AZURE_OPENAI,
    PROVIDER_ANTHROPIC,
    PROVIDER_GEMINI,
    PROVIDER_BEDROCK,
    PROVIDER_OPENAI_COMPATIBLE,
    PROVIDER_VERTEX,
    PROVIDER_COUNT
};

/* Indexed by PROVIDER_*, NULL-terminated (the allowed values of a deployment's `provider` key). */
extern const char *const provider_names[PROVIDER_COUNT + 1];

#endif
