package api

// ExitRestart is the exit status of `ober run` after a restart handover
// (SIGUSR2): the HAProxy instances keep serving and the dataplane stays
// attached, and whoever supervises ober is expected to start it again at
// once. ober.service lists it in RestartForceExitStatus; `ober restart`
// waits for it in direct mode. 75 is EX_TEMPFAIL: "try again".
const ExitRestart = 75
