// The pipeline job (job-dsl plugin, loaded by configuration-as-code's `jobs:`): the
// repository's Jenkinsfile from SCM. The same job as jjb/envbuild.yaml (Jenkins Job Builder);
// tests/jenkins.rs checks that both declare the Jenkinsfile's parameters.
pipelineJob('envbuild-aio-lite') {
    description('envbuild test aio-lite with the shared stage cache (docs/ci.md)')
    parameters {
        stringParam('FLOW', 'rolling-upgrade', 'the aio-lite flow to run')
        stringParam('ES_URL', '', 'ElasticSearch to push the results to (empty: no push)')
        stringParam('ES_CREDENTIAL', '', 'instead of ES_URL: id of a secret-text credential holding it')
    }
    properties {
        pipelineTriggers {
            triggers {
                pollSCM {
                    scmpoll_spec('H/15 * * * *')
                }
            }
        }
    }
    definition {
        cpsScm {
            scm {
                git {
                    remote {
                        url(System.getenv('ENVBUILD_REPO_URL'))
                    }
                    branch('*/main')
                }
            }
            scriptPath('Jenkinsfile')
            lightweight(true)
        }
    }
}
