#!/usr/bin/env python3
"""Drives Berth's /api/v2.0 with harbor-api-client (PyPI), a client generated from
Harbor's own OpenAPI document, the way Harbor automation does.

    harbor_api.py http://HOST:PORT ADMIN_PASSWORD setup PROJECT ROBOT
        creates a private project and a project robot with pull+push, prints
        {"robot": NAME, "secret": SECRET, "project_id": N} as the last line
    harbor_api.py http://HOST:PORT ADMIN_PASSWORD inspect PROJECT REPOSITORY
        lists the project's repositories and the repository's artifacts, prints
        {"repositories": [...], "artifacts": [{"digest":..., "tags": [...], "size": N}]}
"""

import json
import sys

import harbor_client
from harbor_client.api import artifact_api, project_api, repository_api, robot_api


def api_client(url, password):
    cfg = harbor_client.Configuration()
    cfg.host = url.rstrip("/") + "/api/v2.0"
    cfg.username = "admin"
    cfg.password = password
    return harbor_client.ApiClient(cfg)


def setup(client, project, robot):
    projects = project_api.ProjectApi(client)
    projects.create_project(
        harbor_client.ProjectReq(project_name=project, metadata={"public": "false"})
    )
    found = projects.get_project(project, x_is_resource_name=True)
    assert found.name == project, found
    listed = [p.name for p in projects.list_projects(page_size=100)]
    assert project in listed, listed
    created = robot_api.RobotApi(client).create_robot(
        harbor_client.RobotCreate(
            name=robot,
            description="made by harbor-api-client",
            level="project",
            duration=30,
            disable=False,
            permissions=[
                harbor_client.RobotPermission(
                    kind="project",
                    namespace=project,
                    access=[
                        harbor_client.Access(resource="repository", action="pull"),
                        harbor_client.Access(resource="repository", action="push"),
                    ],
                )
            ],
        )
    )
    robots = robot_api.RobotApi(client).list_robot(q="Level=project")
    assert any(r.name == created.name for r in robots), [r.name for r in robots]
    return {"robot": created.name, "secret": created.secret, "project_id": found.project_id}


def inspect(client, project, repository):
    repos = repository_api.RepositoryApi(client).list_repositories(project, page_size=100)
    artifacts = artifact_api.ArtifactApi(client).list_artifacts(
        project, repository, page_size=100, with_tag=True
    )
    return {
        "repositories": [r.name for r in repos],
        "artifacts": [
            {
                "digest": a.digest,
                "size": a.size,
                "tags": [t.name for t in (a.tags or [])],
                "media_type": a.manifest_media_type,
            }
            for a in artifacts
        ],
    }


def main():
    url, password, command = sys.argv[1], sys.argv[2], sys.argv[3]
    client = api_client(url, password)
    if command == "setup":
        out = setup(client, sys.argv[4], sys.argv[5])
    elif command == "inspect":
        out = inspect(client, sys.argv[4], sys.argv[5])
    else:
        sys.exit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
