"""What `tipline run` prints after handing a job to a remote runner: on Dataflow the job id, region and
console URL (the run itself goes on in the cloud, so this is all the user gets at the terminal)."""
from apache_beam.options.pipeline_options import GoogleCloudOptions

from transforms.plumbing.metrics import NAMESPACE

CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"


def dataflow_job(result):
    """The Dataflow API Job of a submission, or None (a template build sends no job)."""
    return getattr(result, "_job", None) if getattr(result, "has_job", False) else None


def submission_lines(runner, result, options):
    """Lines saying where the job went and where to watch it."""
    job = dataflow_job(result)
    if runner == "DataflowRunner" and job is not None:
        gcp = options.view_as(GoogleCloudOptions)
        region = job.location or gcp.region
        project = job.project_id or gcp.project
        return [f"submitted Dataflow job {job.id} in {region} (project {project})",
                "console: " + CONSOLE_URL.format(region=region, job_id=job.id, project=project),
                f"counts: the job's metrics under the '{NAMESPACE}' namespace"]
    if runner == "DataflowRunner":
        template = options.view_as(GoogleCloudOptions).template_location
        return ["no Dataflow job was started: " + (f"template written to {template}" if template else "dry run")]
    return [f"submitted to {runner}; counts are in the runner's metrics under the '{NAMESPACE}' namespace"]
