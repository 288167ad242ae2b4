/* daemon.h: `agentd serve`: configuration, workers, listeners, signals, drain. */
#ifndef AGENTD_DAEMON_H
#define AGENTD_DAEMON_H

/* argv[0] is "serve". Returns the process exit code. */
int daemon_main(int argc, char **argv);

#endif
